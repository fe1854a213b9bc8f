"""The simulated internet: loopback DNS for `*.test` and mailbox-provider MX servers on 127.0.0.x."""

from estafeta.world.providers import PROVIDERS, Provider
from estafeta.world.receivers import ProviderStats, Received
from estafeta.world.runner import WorldProcess, WorldThread, start_world_process
from estafeta.world.world import World
from estafeta.world.zone import WorldZone, zone_line

__all__ = [
    "PROVIDERS",
    "Provider",
    "ProviderStats",
    "Received",
    "World",
    "WorldProcess",
    "WorldThread",
    "WorldZone",
    "start_world_process",
    "zone_line",
]
