"""EID-prefix aggregation (RFC 6836 §7.1 and §8.1; BGP aggregation per RFC 4271 §9.2.2.2), pure.

The ALT scales because each level announces fewer, wider EID prefixes than it
learns.  An aggregate is configured (``[[eid.aggregates]]``) and is *active*,
that is originated into BGP, while at least one contributing route exists: a
Loc-RIB route or one of the node's own originations strictly inside it.  With
``always`` it stays active without contributors.

- ``summary_only`` suppresses the more-specifics an aggregate covers toward
  peers (the node still forwards by them: suppression is an export decision);
- ``as_set`` gives the aggregate an AS_SET of every AS in its contributors'
  paths, so a peer whose AS is among them will not take it back (loop
  prevention); without it the aggregate carries ATOMIC_AGGREGATE, since the
  path information of the contributors is lost (RFC 4271 §5.1.6), and also with
  it when a contributor carries ATOMIC_AGGREGATE itself (§9.2.2.2).  Both carry
  AGGREGATOR (our AS and router ID, RFC 4271 §5.1.7), which the edge renders.
- The aggregate's ORIGIN is INCOMPLETE if any contributor's is, else EGP if
  any is, else IGP (RFC 4271 §9.2.2.2).

Contributions are tracked per aggregate with counters (contributors, AS
occurrences, origins), so a route change costs a walk over the few aggregates
covering its prefix, never a scan of the table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import pytricia

from alt_router.types import Prefix

_ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}
_RANK_ORIGIN = {v: k for k, v in _ORIGIN_RANK.items()}


class AggregateError(ValueError):
    """An aggregate specification the aggregator cannot take."""


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """One configured aggregate (the node translates ``[[eid.aggregates]]`` into these)."""

    prefix: Prefix
    summary_only: bool = False
    as_set: bool = False
    always: bool = False


@dataclass(frozen=True, slots=True)
class AggregateRoute:
    """An active aggregate and the attributes it is originated with."""

    prefix: Prefix
    origin: str
    as_set: tuple[int, ...]  # sorted; empty unless the spec asks for an AS_SET
    atomic_aggregate: bool
    contributors: int


@dataclass(frozen=True, slots=True)
class AggregateChange:
    """Originate ``route`` for ``prefix`` (new or with new attributes), or withdraw it (None)."""

    prefix: Prefix
    route: AggregateRoute | None


@dataclass(slots=True)
class _State:
    spec: AggregateSpec
    contributors: dict[Prefix, tuple[tuple[int, ...], str, bool]] = field(default_factory=dict)
    asns: Counter[int] = field(default_factory=Counter)
    origins: Counter[str] = field(default_factory=Counter)
    atomic: int = 0  # contributors that carry ATOMIC_AGGREGATE
    route: AggregateRoute | None = None

    def current(self) -> AggregateRoute | None:
        if not self.contributors and not self.spec.always:
            return None
        rank = max((_ORIGIN_RANK.get(o, 2) for o in self.origins), default=0)
        return AggregateRoute(
            self.spec.prefix,
            _RANK_ORIGIN[rank],
            tuple(sorted(self.asns)) if self.spec.as_set else (),
            not self.spec.as_set or self.atomic > 0,
            len(self.contributors),
        )


class Aggregator:
    """Which aggregates are active, with what attributes, and which prefixes they suppress."""

    def __init__(self, specs: Iterable[AggregateSpec] = ()) -> None:
        self._states: dict[Prefix, _State] = {}
        self._trees = {4: pytricia.PyTricia(32), 6: pytricia.PyTricia(128)}
        for spec in specs:
            if spec.prefix in self._states:
                raise AggregateError(f"aggregate {spec.prefix} is configured twice")
            self._states[spec.prefix] = _State(spec)
            self._trees[spec.prefix.version][str(spec.prefix)] = spec.prefix

    def __len__(self) -> int:
        return len(self._states)

    def specs(self) -> list[AggregateSpec]:
        return [s.spec for s in self._states.values()]

    def start(self) -> list[AggregateChange]:
        """The aggregates to originate before any route arrives (the ``always`` ones)."""
        return [c for s in self._states.values() if (c := self._refresh(s)) is not None]

    def covering(self, prefix: Prefix) -> Iterator[Prefix]:
        """The configured aggregates strictly covering ``prefix``, most specific first."""
        tree = self._trees[prefix.version]
        if not len(tree):
            return
        text = str(prefix)
        key = tree.get_key(text)
        if key == text:
            key = tree.parent(key)
        while key is not None:
            yield tree[key]
            key = tree.parent(key)

    def update(
        self, prefix: Prefix, as_path: tuple[int, ...] | None, origin: str = "igp", atomic: bool = False
    ) -> list[AggregateChange]:
        """``prefix`` now has a route with ``as_path`` (None: no route any more).

        A route of our own origination contributes with an empty path.  ``atomic``: the
        route carries ATOMIC_AGGREGATE, so every aggregate over it must too (RFC 4271
        §9.2.2.2).  Returns the aggregates whose origination must change.
        """
        out: list[AggregateChange] = []
        for agg in self.covering(prefix):
            state = self._states[agg]
            old = state.contributors.pop(prefix, None)
            if old is not None:
                state.asns.subtract(old[0])
                state.asns += Counter()  # drop the ASes that reached zero
                state.origins[old[1]] -= 1
                if state.origins[old[1]] <= 0:
                    del state.origins[old[1]]
                state.atomic -= old[2]
            if as_path is not None:
                state.contributors[prefix] = (as_path, origin, atomic)
                state.asns.update(as_path)
                state.origins[origin] += 1
                state.atomic += atomic
            change = self._refresh(state)
            if change is not None:
                out.append(change)
        return out

    def _refresh(self, state: _State) -> AggregateChange | None:
        new = state.current()
        old = state.route
        state.route = new
        if new == old:
            return None
        if new is not None and old is not None and (new.origin, new.as_set, new.atomic_aggregate) == (
            old.origin, old.as_set, old.atomic_aggregate
        ):
            return None  # only the contributor count moved: nothing to tell the peers
        return AggregateChange(state.spec.prefix, new)

    def suppressed_by(self, prefix: Prefix) -> Prefix | None:
        """The active summary-only aggregate that hides ``prefix`` from peers, if any."""
        for agg in self.covering(prefix):
            state = self._states[agg]
            if state.spec.summary_only and state.route is not None:
                return agg
        return None

    def active(self, prefix: Prefix) -> AggregateRoute | None:
        state = self._states.get(prefix)
        return state.route if state is not None else None

    def routes(self) -> list[AggregateRoute]:
        return [s.route for s in self._states.values() if s.route is not None]

    def active_covering(self, prefix: Prefix) -> Prefix | None:
        """The most specific active aggregate containing ``prefix`` (or equal to it)."""
        tree = self._trees[prefix.version]
        key = tree.get_key(str(prefix)) if len(tree) else None
        while key is not None:
            if self._states[tree[key]].route is not None:
                return tree[key]  # type: ignore[no-any-return]
            key = tree.parent(key)
        return None

    def view(self) -> list[dict[str, object]]:
        """Every configured aggregate, for the API and ``show``."""
        out: list[dict[str, object]] = []
        for state in sorted(self._states.values(), key=lambda s: (s.spec.prefix.version, s.spec.prefix)):
            spec, route = state.spec, state.route
            hides = spec.summary_only and route is not None
            out.append({
                "prefix": str(spec.prefix),
                "active": route is not None,
                "summary_only": spec.summary_only,
                "as_set": spec.as_set,
                "always": spec.always,
                "contributors": len(state.contributors),
                "suppressed": len(state.contributors) if hides else 0,
                # A sample, not the list: an aggregate may hide 100,000 sites.
                "suppressed_sample": [str(p) for p in islice(state.contributors, 20)] if hides else [],
                "origin": route.origin if route else None,
                "as_set_members": list(route.as_set) if route else [],
                "atomic_aggregate": route.atomic_aggregate if route else None,
            })
        return out
