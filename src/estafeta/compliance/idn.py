"""Internationalised domain names held to the Unicode "highly restrictive" profile (UTS #39 section 5.2),
and labels that imitate an ASCII label (UTS #39 confusables).

Restriction levels follow the standard's algorithm: each character's Script_Extensions (from the `regex`
module), augmented so that Han counts as Japanese, Korean and Han-with-Bopomofo and kana/hangul/bopomofo
count as their writing system; Common and Inherited characters go with any script. A label is

- ASCII-only, or
- single-script: the intersection of its characters' augmented scripts is not empty, or
- highly restrictive: single-script, or Latin plus Han/Hiragana/Katakana, Latin plus Han/Bopomofo, or
  Latin plus Han/Hangul;
- anything else (e.g. Latin mixed with Cyrillic or Greek) is refused with the scripts it mixes.

The highly restrictive level also asks every character to be in the identifier profile: here, at script
level, every character is Common, Inherited or of a script UAX #31 recommends for identifiers (table 5);
historic and limited-use scripts (Runic, Gothic, Cherokee, ...) are refused. Digits must all come from one
decimal system (UTS #39 section 5.3, mixed numbers: ASCII 1 beside Bengali ১ is refused).

Confusables use the Unicode confusables table shipped by `confusable_homoglyphs`: a non-ASCII label whose
every character is ASCII or has an ASCII letter/digit prototype looks like an ASCII label (Cyrillic letters
spelling "paypal") and is refused. Each label is judged on its own, so a Cyrillic name under `.com` is fine.
"""

from __future__ import annotations

import enum
import functools
import unicodedata
from dataclasses import dataclass

import idna
import regex
from confusable_homoglyphs import confusables

# Unicode script names (long form); names this `regex` build does not know are left out at import.
_SCRIPT_NAMES = """
Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak Bengali Bhaiksuki
Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian Caucasian_Albanian Chakma Cham Cherokee
Chorasmian Common Coptic Cuneiform Cypriot Cypro_Minoan Cyrillic Deseret Devanagari Dives_Akuru Dogra
Duployan Egyptian_Hieroglyphs Elbasan Elymaic Ethiopic Garay Georgian Glagolitic Gothic Grantha Greek
Gujarati Gunjala_Gondi Gurmukhi Gurung_Khema Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana
Imperial_Aramaic Inherited Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana
Kawi Kayah_Li Kharoshthi Khitan_Small_Script Khmer Khojki Khudawadi Kirat_Rai Lao Latin Lepcha Limbu
Linear_A Linear_B Lisu Lycian Lydian Mahajani Makasar Malayalam Mandaic Manichaean Marchen Masaram_Gondi
Medefaidrin Meetei_Mayek Mende_Kikakui Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi Mongolian Mro
Multani Myanmar Nabataean Nag_Mundari Nandinagari New_Tai_Lue Newa Nko Nushu Nyiakeng_Puachue_Hmong Ogham
Ol_Chiki Ol_Onal Old_Hungarian Old_Italic Old_North_Arabian Old_Permic Old_Persian Old_Sogdian
Old_South_Arabian Old_Turkic Old_Uyghur Oriya Osage Osmanya Pahawh_Hmong Palmyrene Pau_Cin_Hau Phags_Pa
Phoenician Psalter_Pahlavi Rejang Runic Samaritan Saurashtra Sharada Shavian Siddham SignWriting Sinhala
Sogdian Sora_Sompeng Soyombo Sundanese Sunuwar Syloti_Nagri Syriac Tagalog Tagbanwa Tai_Le Tai_Tham
Tai_Viet Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta Todhri Toto Tulu_Tigalari
Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi Yi Zanabazar_Square
""".split()  # noqa: SIM905 - a word list reads better than 170 quoted names


def _script_patterns() -> dict[str, regex.Pattern[str]]:
    patterns = {}
    for name in _SCRIPT_NAMES:
        try:
            patterns[name] = regex.compile(rf"\p{{Script_Extensions={name}}}")
        except regex.error:
            continue
    return patterns


_SCRIPTS = _script_patterns()
# UAX #31 table 5, Recommended Scripts: the scripts of the identifier profile.
RECOMMENDED_SCRIPTS = frozenset(
    """
    Arabic Armenian Bengali Bopomofo Cyrillic Devanagari Ethiopic Georgian Greek Gujarati Gurmukhi Han Hangul
    Hebrew Hiragana Kannada Katakana Khmer Lao Latin Malayalam Myanmar Oriya Sinhala Tamil Telugu Thaana Thai
    Tibetan
    """.split()  # noqa: SIM905
)
_ANY = frozenset({"*"})  # Common / Inherited: goes with every script
JAPANESE, KOREAN, HAN_BOPOMOFO = "Japanese", "Korean", "Han_with_Bopomofo"
_AUGMENT = {
    "Han": {HAN_BOPOMOFO, JAPANESE, KOREAN},
    "Hiragana": {JAPANESE},
    "Katakana": {JAPANESE},
    "Hangul": {KOREAN},
    "Bopomofo": {HAN_BOPOMOFO},
}


class RestrictionLevel(enum.IntEnum):
    """UTS #39 restriction levels, most restrictive first (unrestricted is folded into minimal)."""

    ASCII_ONLY = 1
    SINGLE_SCRIPT = 2
    HIGHLY_RESTRICTIVE = 3
    MODERATELY_RESTRICTIVE = 4
    MINIMALLY_RESTRICTIVE = 5


@functools.lru_cache(maxsize=4096)
def scripts(char: str) -> frozenset[str]:
    """The character's augmented Script_Extensions; `{"*"}` for Common and Inherited characters."""
    found = {name for name, pattern in _SCRIPTS.items() if pattern.match(char)}
    if not found or found & {"Common", "Inherited"}:
        return _ANY
    for name in list(found):
        found |= _AUGMENT.get(name, set())
    return frozenset(found)


def _resolved(label: str, without: str | None = None) -> frozenset[str] | None:
    """Intersection of the characters' script sets (None = every script, i.e. only Common/Inherited)."""
    result: frozenset[str] | None = None
    for char in label:
        sets = scripts(char)
        if sets is _ANY or (without is not None and without in sets):
            continue
        result = sets if result is None else result & sets
    return result


def restriction_level(label: str) -> RestrictionLevel:
    if label.isascii():
        return RestrictionLevel.ASCII_ONLY
    resolved = _resolved(label)
    if resolved is None or resolved:
        return RestrictionLevel.SINGLE_SCRIPT
    without_latin = _resolved(label, without="Latin")
    if without_latin is None or without_latin & {JAPANESE, KOREAN, HAN_BOPOMOFO}:
        return RestrictionLevel.HIGHLY_RESTRICTIVE
    if without_latin and not without_latin & {"Cyrillic", "Greek"}:
        return RestrictionLevel.MODERATELY_RESTRICTIVE
    return RestrictionLevel.MINIMALLY_RESTRICTIVE


def _main_script(char: str) -> str:
    named = sorted(s for s in scripts(char) if s in _SCRIPTS)
    return named[0] if named else "Common"


def _describe(char: str) -> str:
    return f"{char} (U+{ord(char):04X} {unicodedata.name(char, 'unnamed').title()}, {_main_script(char)})"


def ascii_lookalike(label: str) -> tuple[str, list[str]] | None:
    """The ASCII label a non-ASCII label imitates, and the imitating characters (None: it imitates none)."""
    if label.isascii():
        return None
    out, lookalikes = [], []
    for char in label:
        if char.isascii():
            out.append(char)
            continue
        prototype = next(
            (
                entry["c"]
                for entry in confusables.confusables_data.get(char, [])
                if entry["c"].isascii() and (entry["c"].isalnum() or entry["c"] == "-")
            ),
            None,
        )
        if prototype is None:
            return None
        out.append(prototype.lower())
        described = f"{_describe(char)} looks like {prototype!r}"
        if described not in lookalikes:
            lookalikes.append(described)
    return "".join(out), lookalikes


def outside_profile(label: str) -> list[str]:
    """Characters of scripts outside the identifier profile (UAX #31 recommended scripts), one per script."""
    found: dict[str, str] = {}
    for char in label:
        named = scripts(char)
        if named is not _ANY and not named & RECOMMENDED_SCRIPTS:
            found.setdefault(_main_script(char), char)
    return list(found.values())


def numbering_systems(label: str) -> list[str]:
    """One digit of each decimal system the label's digits come from (UTS #39 mixed-number detection)."""
    found: dict[int, str] = {}
    for char in label:
        if unicodedata.category(char) == "Nd":
            found.setdefault(ord(char) - unicodedata.digit(char), char)  # keyed by the system's zero
    return list(found.values())


@dataclass(frozen=True)
class IdnProblem:
    domain: str
    label: str
    reason: str


def check_domain(domain: str) -> list[IdnProblem]:
    """Problems of a domain (A-labels or U-labels) under the highly restrictive profile; empty when fine."""
    domain = domain.strip().rstrip(".")
    if not domain:
        return []
    try:
        unicode_domain = (
            idna.decode(domain) if domain.isascii() else idna.decode(idna.encode(domain, uts46=True))
        )
    except idna.IDNAError as exc:
        return [IdnProblem(domain, domain, f"is not a valid internationalised domain name: {exc}")]
    problems = []
    for label in unicode_domain.split("."):
        level = restriction_level(label)
        if level > RestrictionLevel.HIGHLY_RESTRICTIVE:
            mixed = sorted({_main_script(c) for c in label if scripts(c) is not _ANY})
            examples = ", ".join(_describe(c) for c in _first_of_each_script(label))
            problems.append(
                IdnProblem(
                    domain,
                    label,
                    f"label {label!r} mixes the {' and '.join(mixed)} scripts ({examples}); only one "
                    "script, or Latin with Chinese, Japanese or Korean, is allowed "
                    "(UTS #39 highly restrictive)",
                )
            )
            continue
        if historic := outside_profile(label):
            problems.append(
                IdnProblem(
                    domain,
                    label,
                    f"label {label!r} uses {', '.join(_describe(c) for c in historic)}: a script outside "
                    "the identifier profile (UAX #31 recommended scripts; UTS #39 highly restrictive)",
                )
            )
            continue
        if len(digits := numbering_systems(label)) > 1:
            problems.append(
                IdnProblem(
                    domain,
                    label,
                    f"label {label!r} mixes digits of different number systems "
                    f"({', '.join(_describe(c) for c in digits)}; UTS #39 mixed numbers)",
                )
            )
            continue
        imitation = ascii_lookalike(label)
        if imitation is not None:
            target, lookalikes = imitation
            problems.append(
                IdnProblem(
                    domain,
                    label,
                    f"label {label!r} is confusable with the ASCII label {target!r}: {'; '.join(lookalikes)}",
                )
            )
    return problems


def _first_of_each_script(label: str) -> list[str]:
    seen: dict[str, str] = {}
    for char in label:
        if scripts(char) is not _ANY:
            seen.setdefault(_main_script(char), char)
    return list(seen.values())
