"""StarCraft II unit data used by the embedded simulator.

Health, shields, armor, speed and radius come from the SMAC map files (``shared/spec/smac.md`` §4).
Weapons come from Blizzard's game data as published in the SC2Mapster/SC2GameData repository
(``mods/<mod>.sc2mod/base.sc2data/GameData/*.xml``): ``liberty`` holds the stock units and weapons,
``voidmulti`` the current multiplayer balance that overrides them, ``core`` the defaults every weapon
inherits. Data times are in *game seconds*, the "normal" game speed that the game clock runs at: 16 game
loops per game second (pysc2 ``docs/environment.md``: "16 steps = 1 second of game time"). Liquipedia's
"faster" seconds are game seconds / 1.4, so the old table's 0.61 s marine cooldown × 22.4 loops and the
data's ``Period`` 0.8608 × 16 loops describe (almost) the same 13.8 loops; the data's figure is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: Game loops per game second (normal speed), the time base of all game data.
LOOPS_PER_GAME_SECOND = 16.0

#: Shield regeneration: 2 shield points per game second, after 10 game seconds without damage.
SHIELD_REGEN_PER_LOOP = 2.0 / LOOPS_PER_GAME_SECOND
SHIELD_REGEN_DELAY_LOOPS = 10.0 * LOOPS_PER_GAME_SECOND

#: SC2's random weapon delay added to every weapon period: ``RandomDelayMin`` -0.0625 and
#: ``RandomDelayMax`` 0.125 game seconds (core ``WeaponData.xml``, ``CWeaponLegacy`` defaults), i.e. -1
#: to +2 game loops, as pysc2's ``docs/environment.md`` says ("between -1 to +2 game steps").
WEAPON_DELAY_MIN_LOOPS = -0.0625 * LOOPS_PER_GAME_SECOND
WEAPON_DELAY_MAX_LOOPS = 0.125 * LOOPS_PER_GAME_SECOND
#: Armor never reduces the damage of a hit below 0.5 (SC2's minimum damage).
MIN_DAMAGE = 0.5

#: Automatic target acquisition, core ``GameData.xml`` (``CGame`` defaults; no mod overrides them):
#: a unit chasing a target it acquired gives up once it is ``AcquireLeashRadius`` 21 from where it
#: acquired it (``AcquireMovementLimit`` is also 21), walks back and acquires nothing until it is within
#: ``AcquireLeashResetRadius`` 5 of that point; an attacked unit calls nearby idle allies, those within
#: ``CallForHelpRadius`` 4, to attack its attacker, at most once per ``CallForHelpPeriod`` 2 game seconds.
ACQUIRE_LEASH_RADIUS = 21.0
ACQUIRE_LEASH_RESET_RADIUS = 5.0
CALL_FOR_HELP_RADIUS = 4.0
CALL_FOR_HELP_PERIOD_LOOPS = 2.0 * LOOPS_PER_GAME_SECOND

ATTRIBUTE_LIGHT = 1
ATTRIBUTE_ARMORED = 2
ATTRIBUTE_BIOLOGICAL = 4
ATTRIBUTE_MECHANICAL = 8

#: Medivac heal (liberty ``EffectData.xml`` ``CEffectCreateHealer MedivacHeal``; ``AbilData.xml``
#: ``CAbilEffectTarget MedivacHeal``, with voidmulti's target filter): ``RechargeVitalRate`` 9 life per game
#: second, paid with ``DrainVitalCostFactor`` 0.33 energy per life point healed; ``Range`` 4 (edge to
#: edge); only biological allies other than the healer itself (``TargetFilters`` "Biological";
#: "Self,Enemy"). The autocast that the built-in AI's medivacs use looks ``AutoCastRange`` 6 far, needs
#: 5 energy to start (validator ``healCasterMinEnergy``: Energy GE 5) and sorts its candidates by
#: ``TSLifeFraction`` then ``TSDistance``.
HEAL_ENERGY_PER_LIFE = 0.33
HEAL_AUTOCAST_RANGE = 6.0
HEAL_AUTOCAST_MIN_ENERGY = 5.0


@dataclass(frozen=True)
class UnitType:
    """One unit type. Distances are in map cells, times in game seconds unless named ``_loops``."""

    name: str
    race: str  # "T", "P" or "Z"
    health_max: float
    shield_max: float
    armor: float
    damage: float  # per hit; 0 = no weapon (not a threat to anyone)
    bonus_damage: float
    bonus_attribute: int  # the attribute the bonus applies to (0 = none)
    attacks: int  # hits per attack (a zealot strikes twice)
    weapon_period: float  # ``Period``: game seconds from one attack's start to the next's
    weapon_range: float  # ``Range``, edge to edge
    min_scan_range: float  # ``MinScanRange``: how far (edge to edge) the unit looks for targets
    damage_point: float  # ``DamagePoint``: game seconds from the attack's start to the hit (or launch)
    missile_speed: float  # cells per game second of the weapon's missile; 0 = the hit is instant
    strike_interval: float  # game seconds between the hits of one attack (``PeriodicPeriodArray``)
    speed_normal: float  # cells per game second
    radius: float
    attributes: int  # bit set of ATTRIBUTE_*
    smac_max_cooldown: float  # SMAC's ``unit_max_cooldown``, the state's cooldown normaliser
    smac_max_shield: float  # SMAC's ``unit_max_shield`` (0 when the race has no shields)
    flying: bool = False  # an air unit: no ground collision, flies over unpathable cells
    hits_air: bool = True  # whether the weapon's ``TargetFilters`` allow air targets
    heal_rate: float = 0.0  # life healed per game second; > 0 makes the unit a healer (no weapon)
    energy_max: float = 0.0  # ``EnergyMax``
    energy_start: float = 0.0  # ``EnergyStart``
    energy_regen: float = 0.0  # ``EnergyRegenRate``, energy per game second
    always_threatens: bool = False  # ``FlagArray AlwaysThreatens``: counts as a threat without a weapon

    @property
    def cooldown_loops(self) -> float:
        return self.weapon_period * LOOPS_PER_GAME_SECOND

    @property
    def speed_per_loop(self) -> float:
        return self.speed_normal / LOOPS_PER_GAME_SECOND

    @property
    def is_healer(self) -> bool:
        return self.heal_rate > 0.0


# Weapons (SC2Mapster/SC2GameData, mods/*.sc2mod/base.sc2data/GameData/):
# - marine, GuassRifle: Period 0.8608, DamagePoint 0.05 (liberty WeaponData.xml), Range 5 (core
#   default), MinScanRange 5.5 (voidmulti); damage 6 (liberty EffectData.xml ``GuassRifle``).
# - stalker, ParticleDisruptors: Range 6 (liberty), Period 1.87 and MinScanRange 6.5 (voidmulti),
#   DamagePoint 0.167 (core default); it launches the missile ``StalkerWeapon`` (liberty EffectData.xml
#   ``CEffectLaunchMissile``) whose mover inherits ``MissileDefault``: MaxSpeed 18.75 after an
#   acceleration of 3200 (core MoverData.xml), i.e. 18.75 from the start; damage 13 +5 armored
#   (voidmulti EffectData.xml ``ParticleDisruptorsU``).
# - zealot, PsiBlades: Range 0.1, Period 1.2, DamagePoint 0 (liberty), MinScanRange 5 (core default);
#   ``PsiBladesBurst`` strikes twice, 0.28 game seconds apart (``PeriodicPeriodArray`` 0, 0.28), 8 each.
# - marauder, PunisherGrenades: Range 6, Period 1.5, DamagePoint 0, ground targets only (``TargetFilters``
#   "Ground,Visible"; liberty), MinScanRange 6.5 (voidmulti); it launches ``PunisherGrenadesLM`` whose mover
#   ``PunisherGrenadesWeapon`` flies at MaxSpeed 20 (liberty MoverData.xml); damage 10 +10 armored
#   (liberty ``PunisherGrenadesU``). Its slow (Concussive Shells, ``PunisherGrenadesSlow``) only applies
#   once the player has researched it (validator ``PunisherGrenadesResearched``); SMAC's map triggers
#   only create the units and order the attack (spec §5), so it is left out.
# - medivac: no weapon; heals (``HEAL_*`` above, 9 life per game second); EnergyMax 200, EnergyStart 50,
#   EnergyRegenRate 0.5625; an air unit (``PlaneArray Air``, ``Collide Flying``), Armored and Mechanical,
#   flagged ``AlwaysThreatens`` (liberty UnitData.xml). ``weapon_range`` holds the heal range 4 and
#   ``min_scan_range`` the autocast range 6. Its speed 2.75 is the SMAC map's (spec §4).
# Marine and stalker weapons hit air (``TargetFilters`` "Visible;..."), zealot and marauder ones do not.
UNIT_TYPES: dict[str, UnitType] = {
    u.name: u
    for u in (
        UnitType("marine", "T", 45.0, 0.0, 0.0, 6.0, 0.0, 0, 1, 0.8608, 5.0, 5.5, 0.05, 0.0, 0.0,
                 2.25, 0.375, ATTRIBUTE_LIGHT | ATTRIBUTE_BIOLOGICAL, 15.0, 0.0),
        UnitType("stalker", "P", 80.0, 80.0, 1.0, 13.0, 5.0, ATTRIBUTE_ARMORED, 1, 1.87, 6.0, 6.5, 0.167,
                 18.75, 0.0, 2.9531, 0.625, ATTRIBUTE_ARMORED | ATTRIBUTE_MECHANICAL, 35.0, 80.0),
        UnitType("zealot", "P", 100.0, 50.0, 1.0, 8.0, 0.0, 0, 2, 1.2, 0.1, 5.0, 0.0, 0.0, 0.28,
                 2.25, 0.5, ATTRIBUTE_LIGHT | ATTRIBUTE_BIOLOGICAL, 22.0, 50.0, hits_air=False),
        UnitType("marauder", "T", 125.0, 0.0, 1.0, 10.0, 10.0, ATTRIBUTE_ARMORED, 1, 1.5, 6.0, 6.5, 0.0,
                 20.0, 0.0, 2.25, 0.5625, ATTRIBUTE_ARMORED | ATTRIBUTE_BIOLOGICAL, 25.0, 0.0,
                 hits_air=False),
        UnitType("medivac", "T", 150.0, 0.0, 1.0, 0.0, 0.0, 0, 0, 0.0, 4.0, HEAL_AUTOCAST_RANGE, 0.0, 0.0,
                 0.0, 2.75, 0.75, ATTRIBUTE_ARMORED | ATTRIBUTE_MECHANICAL, 200.0, 0.0, flying=True,
                 hits_air=False, heal_rate=9.0, energy_max=200.0, energy_start=50.0, energy_regen=0.5625,
                 always_threatens=True),
    )
}


class UnitArrays(NamedTuple):
    """The engine's per-unit constants, one float64/int64 array ``[U]`` each (agents, then enemies).

    Distances in cells, times in game loops, speeds in cells per loop.
    """

    radius: np.ndarray
    speed: np.ndarray
    weapon_range: np.ndarray
    scan_range: np.ndarray  # max(MinScanRange, Range): acquisition reach, edge to edge
    damage: np.ndarray
    bonus: np.ndarray
    bonus_attribute: np.ndarray
    attributes: np.ndarray
    attacks: np.ndarray
    armor: np.ndarray
    cooldown_loops: np.ndarray
    shield_max: np.ndarray
    damage_point_loops: np.ndarray
    missile_speed: np.ndarray  # cells per loop; 0 = instant hit
    strike_interval_loops: np.ndarray


def unit_arrays(units: list[UnitType]) -> UnitArrays:
    """The per-unit constant arrays of a line-up of unit types."""
    f64 = lambda vals: np.array(vals, dtype=np.float64)  # noqa: E731
    i64 = lambda vals: np.array(vals, dtype=np.int64)  # noqa: E731
    per_loop = LOOPS_PER_GAME_SECOND
    return UnitArrays(
        radius=f64([u.radius for u in units]), speed=f64([u.speed_per_loop for u in units]),
        weapon_range=f64([u.weapon_range for u in units]),
        scan_range=f64([max(u.min_scan_range, u.weapon_range) for u in units]),
        damage=f64([u.damage for u in units]), bonus=f64([u.bonus_damage for u in units]),
        bonus_attribute=i64([u.bonus_attribute for u in units]), attributes=i64([u.attributes for u in units]),
        attacks=i64([u.attacks for u in units]), armor=f64([u.armor for u in units]),
        cooldown_loops=f64([u.cooldown_loops for u in units]), shield_max=f64([u.shield_max for u in units]),
        damage_point_loops=f64([u.damage_point * per_loop for u in units]),
        missile_speed=f64([u.missile_speed / per_loop for u in units]),
        strike_interval_loops=f64([u.strike_interval * per_loop for u in units]))


class AirHealArrays(NamedTuple):
    """The engine's per-unit constants for air units and healers, ``[U]`` each (agents, then enemies).

    ``active`` (bool) says whether any unit flies or heals: without, the engine skips their rules.
    ``flying``, ``hits_air``, ``threat`` (armed or ``AlwaysThreatens``: what the enemy AI counts as a
    threat) and ``healer`` are bool; ``heal_per_loop`` (life), ``health_max`` (where healing stops),
    ``energy_max`` and ``energy_regen_per_loop`` are float64.
    """

    active: bool
    flying: np.ndarray
    hits_air: np.ndarray
    threat: np.ndarray
    healer: np.ndarray
    heal_per_loop: np.ndarray
    health_max: np.ndarray
    energy_max: np.ndarray
    energy_regen_per_loop: np.ndarray


def air_heal_arrays(units: list[UnitType]) -> AirHealArrays:
    """The air-unit and healer constant arrays of a line-up of unit types."""
    per_loop = LOOPS_PER_GAME_SECOND
    flags = lambda vals: np.array(vals, dtype=np.bool_)  # noqa: E731
    return AirHealArrays(
        active=any(u.flying or u.is_healer for u in units),
        flying=flags([u.flying for u in units]), hits_air=flags([u.hits_air for u in units]),
        threat=flags([u.damage > 0.0 or u.always_threatens for u in units]),
        healer=flags([u.is_healer for u in units]),
        heal_per_loop=np.array([u.heal_rate / per_loop for u in units], dtype=np.float64),
        health_max=np.array([u.health_max for u in units], dtype=np.float64),
        energy_max=np.array([u.energy_max for u in units], dtype=np.float64),
        energy_regen_per_loop=np.array([u.energy_regen / per_loop for u in units], dtype=np.float64))
