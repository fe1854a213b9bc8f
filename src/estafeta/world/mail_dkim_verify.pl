#!/usr/bin/perl
# The world's second DKIM verifier: Debian's Mail::DKIM (libmail-dkim-perl), independent of dkimpy.
#
# Usage: mail_dkim_verify.pl DNS_HOST DNS_PORT
# Reads messages from stdin, each as a line with its length in bytes followed by that many bytes, and
# answers each with one JSON line: {"signatures": [{"domain", "selector", "algorithm", "result",
# "detail"}]}. Keys are looked up in the world's DNS server at DNS_HOST:DNS_PORT.
use strict;
use warnings;
use JSON::PP;
use Mail::DKIM::DNS;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;

my ($host, $port) = @ARGV;
die "usage: $0 DNS_HOST DNS_PORT\n" unless defined $port;
my $resolver = Net::DNS::Resolver->new(
    nameservers => [$host],
    port => $port,
    recurse => 0,
    retry => 2,
    tcp_timeout => 5,
    udp_timeout => 5,
);
$resolver->udppacketsize(1232);
Mail::DKIM::DNS::resolver($resolver);

binmode STDIN;
binmode STDOUT;
$| = 1;
my $json = JSON::PP->new->canonical;
while (defined(my $length = <STDIN>)) {
    chomp $length;
    my $message = '';
    while (length($message) < $length) {
        my $read = read(STDIN, $message, $length - length($message), length($message));
        die "truncated message\n" unless $read;
    }
    my $verifier = Mail::DKIM::Verifier->new();
    my @signatures;
    eval {
        $verifier->PRINT($message);
        $verifier->CLOSE();
        for my $signature ($verifier->signatures) {
            push @signatures, {
                domain => $signature->domain // '',
                selector => $signature->selector // '',
                algorithm => $signature->algorithm // '',
                result => $signature->result // 'none',
                detail => $signature->result_detail // '',
            };
        }
        1;
    } or do {
        my $error = $@ || 'unknown error';
        chomp $error;
        @signatures = ({domain => '', selector => '', algorithm => '', result => 'temperror', detail => $error});
    };
    print $json->encode({signatures => \@signatures}), "\n";
}
