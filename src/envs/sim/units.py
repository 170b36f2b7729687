"""StarCraft II unit data used by the embedded simulator.

Figures come from the SMAC map files (HP, shields, armor, speed, radius) and the standard SC2 weapon data
(damage, bonus, attacks, cooldown, range); see ``shared/spec/smac.md`` §4. Times are stored in SC2 game
loops: 16 loops per *normal*-speed second, i.e. 22.4 loops per *faster*-speed second (the speed the
weapon cooldowns are usually quoted in).
"""
from __future__ import annotations

from dataclasses import dataclass

LOOPS_PER_NORMAL_SECOND = 16.0
LOOPS_PER_FASTER_SECOND = 22.4

#: Shield regeneration: 2 shield points per normal second, after 10 normal seconds without damage.
SHIELD_REGEN_PER_LOOP = 2.0 / LOOPS_PER_NORMAL_SECOND
SHIELD_REGEN_DELAY_LOOPS = 10.0 * LOOPS_PER_NORMAL_SECOND

ATTRIBUTE_LIGHT = 1
ATTRIBUTE_ARMORED = 2


@dataclass(frozen=True)
class UnitType:
    """One unit type. Distances are in map cells, times in game loops."""

    name: str
    race: str  # "T", "P" or "Z"
    health_max: float
    shield_max: float
    armor: float
    damage: float
    bonus_damage: float
    bonus_attribute: int  # the attribute the bonus applies to (0 = none)
    attacks: int  # hits per attack (a zealot strikes twice)
    cooldown_faster_s: float
    weapon_range: float  # edge to edge, as in SC2
    sight_range: float  # the engine's acquisition leash; SMAC's observations use a fixed 9
    speed_normal: float  # cells per normal-speed second
    radius: float
    attributes: int  # bit set of ATTRIBUTE_*
    smac_max_cooldown: float  # SMAC's ``unit_max_cooldown``, the state's cooldown normaliser
    smac_max_shield: float  # SMAC's ``unit_max_shield`` (0 when the race has no shields)

    @property
    def cooldown_loops(self) -> float:
        return self.cooldown_faster_s * LOOPS_PER_FASTER_SECOND

    @property
    def speed_per_loop(self) -> float:
        return self.speed_normal / LOOPS_PER_NORMAL_SECOND


UNIT_TYPES: dict[str, UnitType] = {
    u.name: u
    for u in (
        UnitType("marine", "T", 45.0, 0.0, 0.0, 6.0, 0.0, 0, 1, 0.61, 5.0, 9.0, 2.25, 0.375,
                 ATTRIBUTE_LIGHT, 15.0, 0.0),
        UnitType("stalker", "P", 80.0, 80.0, 1.0, 13.0, 5.0, ATTRIBUTE_ARMORED, 1, 1.34, 6.0, 10.0,
                 2.9531, 0.625, ATTRIBUTE_ARMORED, 35.0, 80.0),
        UnitType("zealot", "P", 100.0, 50.0, 1.0, 8.0, 0.0, 0, 2, 0.86, 0.1, 9.0, 2.25, 0.5,
                 ATTRIBUTE_LIGHT, 22.0, 50.0),
    )
}
