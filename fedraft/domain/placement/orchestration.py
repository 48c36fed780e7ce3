"""Orchestration on Tick (SPEC §7, D6, D17): what one Tick changes, and when the next one is due.

A Tick runs these steps in order, over pools by id and workloads by id. "Attempts" are calls of the
scheduler; each costs one unit of the tick's budget (policy.max_moves_per_tick), and so does every
workload it preempts, so moves per Tick never exceed the cap. Steps 1, 2 and the give-ups of 5 are free.

  step  what           which workloads                                     goes to              when nothing fits
  ----  -------------  --------------------------------------------------  -------------------  ---------------------
  1     health         every pool: check_health (DOWN, flaps cleared)      -                    -
  2     drain start    PLACED/RUNNING/MIGRATING on a draining pool         DRAINING (same pool) -
  3     failover       holding resources on a DOWN (or unknown) pool       any pool *           PENDING, released
  4     pending retry  PENDING and due (RETRY below), priority first       any pool *           stays, tried_ms = now
  5     sticky return  away from home because of a failover (RETURN)       its home pool        stays, tried_ms = now
  6     drain end      on a pool draining for policy.drain_ms (60 s)       any pool *           PENDING, released
  7     rebalance      RUNNING GPU work on an overloaded pool (REBALANCE)  a pool left below    stays, tried_ms = now
                                                                         the threshold

  * not flapping, not the pool it leaves; may preempt lower-priority work when policy allows.
    Return and rebalance never preempt.

A move lands the workload PLACED or MIGRATING (lifecycle.landing_phase), records a Move(at, index,
from, to, reason) — reasons "failover", "retry", "return", "drain", "rebalance", "preempted"; a
requeue is a Move to "" — and keeps the last 16. A workload first placed by a Tick gets its home pool.

RETRY. Pending work that found no pool at `tried_ms` is tried again at the first Tick after a pool
came UP or stopped flapping since then, or else retry_after_ms (one heartbeat interval, 10 s) after it:
capacity freed by completions, inventory or trust changes is noticed within 10 s. Work never tried
(tried_ms None) is due at once. Due work goes highest priority first, then oldest submission, then id;
a failed try moves it to the back, so nothing starves.

RETURN (sticky return). Work goes back to its home pool while that pool's return window is open:
from the moment it came UP again (changed_ms) for policy.return_window_ms (60 s), and only if the home
pool is UP, not cordoned, not draining and not flapping (a flapping pool's window, which ends before
its hysteresis, never opens). Only work that is away because of a failover qualifies: its latest move
other than a "retry" placement is a "failover" (a drain, a rebalance, a Migrate or a preemption since
then are deliberate and stay). Work that is PLACED or RUNNING is returned, not work in flight
(MIGRATING, DRAINING). A failed try is repeated retry_after_ms later while the window is open; once it has
closed the workload stays where it is (tried_ms records that it gave up).

REBALANCE. An UP, non-draining pool is overloaded when its GPU load (booked units * 100 // healthy
units) exceeds the federation mean by more than policy.rebalance_threshold_pct percent:
load * 100 > mean * (100 + threshold). From the most loaded pool down, its RUNNING GPU workloads are
considered lowest priority first, then fewest GPUs, then id, until the pool is no longer overloaded.
A workload is considered at most once per hysteresis (5 min): after a load move (last_load_move_ms)
and after a fruitless consideration (tried_ms). A move is kept only if its target is not overloaded
afterwards; rebalance never preempts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace

from fedraft.domain.placement.gpu_health import clear_recovered, fault_deadline
from fedraft.domain.placement.health import check_health, flapping_pools, health_deadline
from fedraft.domain.placement.lifecycle import landing_phase, record_move, transition
from fedraft.domain.placement.model import Health, Move, Phase, Policy, Pool, Workload
from fedraft.domain.scheduler.explain import encode_explanation
from fedraft.domain.scheduler.stack import Decision, place
from fedraft.domain.scheduler.view import FederationView

__all__ = ["TickPlan", "next_deadline", "plan_gpu_failover", "plan_tick", "start_drain"]

FAILOVER, RETRY, RETURN, DRAIN, REBALANCE, PREEMPTED = "failover", "retry", "return", "drain", "rebalance", "preempted"
GPU_FAULT = "gpu-fault"   # its worker or a unit it holds failed or vanished (gpu_health.py)
ACTIVE = (Phase.PLACED, Phase.RUNNING, Phase.MIGRATING)   # holding phases a drain turns into DRAINING
RETURNABLE = (Phase.PLACED, Phase.RUNNING)


@dataclass(frozen=True)
class TickPlan:
    """What a Tick changed: pools and workloads that differ (sorted by id) and the moves, in order."""

    pools: tuple[Pool, ...] = ()
    workloads: tuple[Workload, ...] = ()
    moves: tuple[tuple[str, Move], ...] = ()   # (workload id, move)


def retry_after_ms(policy: Policy) -> int:
    return policy.heartbeat_ms


def plan_tick(view: FederationView, workloads: tuple[Workload, ...], now_ms: int, term_start_ms: int,
              index: int, policy: Policy) -> TickPlan:
    """Everything one Tick at effective time `now_ms` (log `index`) does; `view` is updated in place."""
    tick = _Tick(view, workloads, now_ms, index, policy)
    tick.health(term_start_ms)
    tick.drain_start()
    tick.failover()
    tick.retry_pending()
    tick.return_home()
    tick.drain_end()
    tick.rebalance()
    return tick.plan()


def plan_gpu_failover(view: FederationView, broken: tuple[tuple[Workload, str], ...], now_ms: int, index: int,
                      policy: Policy) -> TickPlan:
    """Move at once the work whose worker or GPU units failed (a ReportInventory at `now_ms`, log `index`):
    the failover rules (any pool not flapping, this one included; preemption per policy; no target:
    PENDING), highest priority first, then id. The scheduler is asked at most max_moves_per_tick
    times; the rest is released to PENDING untried, so the next Tick retries it at once."""
    tick = _Tick(view, tuple(w for w, _ in broken), now_ms, index, policy)
    tick.flapping = flapping_pools(view.pools(), now_ms, policy)
    for w, why in sorted(broken, key=lambda b: (-b[0].spec.priority, b[0].id)):
        tick.gpu_failover(w, why)
    return tick.plan()


def start_drain(pool: Pool, workloads: Iterable[Workload], now_ms: int) -> tuple[Pool, tuple[Workload, ...]]:
    """Drain starts at `now_ms`: the pool takes no new work, and its work becomes DRAINING (sorted by id)."""
    drained = replace(pool, drain_started_ms=now_ms) if pool.drain_started_ms is None else pool
    changed = []
    for w in sorted(workloads, key=lambda w: w.id):
        if w.phase in ACTIVE and w.placement is not None and w.placement.pool == pool.id:
            moved = transition(w, Phase.DRAINING, f"pool {pool.id} is draining")
            assert isinstance(moved, Workload)
            changed.append(moved)
    return drained, tuple(changed)


def next_deadline(pools: Iterable[Pool], workloads: Iterable[Workload], term_start_ms: int,
                  policy: Policy) -> int | None:
    """The earliest effective time at which plan_tick would change something, or None (SPEC D6).

    A time in the past means "due now". Every rule here is the one plan_tick acts on, and plan_tick
    changes the state whenever it acts on one, so a due deadline is never returned twice for nothing.
    """
    by_id = {p.id: p for p in sorted(pools, key=lambda p: p.id)}
    work = sorted((w for w in workloads if not w.phase.terminal), key=lambda w: w.id)
    due: list[int] = [d for d in (health_deadline(p, term_start_ms, policy) for p in by_id.values()) if d is not None]
    due += [d for d in (fault_deadline(p, policy) for p in by_id.values() if p.gpu_faults) if d is not None]
    up_times = _up_times(by_id.values())
    for w in work:
        if w.phase.holds_resources and w.placement is not None:
            pool = by_id.get(w.placement.pool)
            if pool is None or pool.status.health is Health.DOWN:
                due.append(pool.status.changed_ms if pool is not None else w.placed_ms)
            elif pool.drain_started_ms is not None:
                due.append(pool.drain_started_ms if w.phase in ACTIVE else pool.drain_started_ms + policy.drain_ms)
        if w.phase is Phase.PENDING:
            due.append(_pending_due(w, up_times, policy))
        back = _return_due(w, by_id, policy)
        if back is not None:
            due.append(back[0])
    if any(_rebalance_due(w, policy) is not None for w in work):
        due.extend(_rebalance_deadlines(tuple(by_id.values()), work, policy))
    return min(due) if due else None


# -- the rules shared by plan_tick and next_deadline -------------------------------------------


def _up_times(pools: Iterable[Pool]) -> list[int]:
    """When each UP pool last came UP, sorted (for "did a pool come UP since this attempt")."""
    return sorted(p.status.changed_ms for p in pools if p.status.health is Health.UP)


def _pending_due(w: Workload, up_times: list[int], policy: Policy) -> int:
    if w.tried_ms is None:
        return 0
    due = w.tried_ms + retry_after_ms(policy)
    later = bisect_right(up_times, w.tried_ms)
    return min(due, up_times[later]) if later < len(up_times) else due


def _away_by_failover(w: Workload) -> bool:
    for move in reversed(w.moves):
        if move.reason != RETRY:
            return move.reason == FAILOVER
    return False


def _return_due(w: Workload, pools: dict[str, Pool], policy: Policy) -> tuple[int, int] | None:
    """(when a return is due, when the home's window closes), or None when it does not apply."""
    if w.phase not in RETURNABLE or w.placement is None or w.placement.pool == w.home_pool:
        return None
    home = pools.get(w.home_pool)
    if home is None or home.status.health is not Health.UP or home.cordoned or home.drain_started_ms is not None:
        return None
    if not _away_by_failover(w):
        return None
    opens = home.status.changed_ms
    if len(home.status.down_events_ms) >= 2:   # flapping until stable for the hysteresis
        opens += policy.hysteresis_ms
    closes = home.status.changed_ms + policy.return_window_ms
    due = opens if w.tried_ms is None else max(opens, w.tried_ms + retry_after_ms(policy))
    return (due, closes) if due < closes else None


def _rebalance_due(w: Workload, policy: Policy) -> int | None:
    """When a workload may next be considered for a load move (its pool aside)."""
    if w.phase is not Phase.RUNNING or w.spec.gpus <= 0 or w.placement is None:
        return None
    marks = [m + policy.hysteresis_ms for m in (w.last_load_move_ms, w.tried_ms) if m is not None]
    return max(marks, default=0)


def _overloaded(view: FederationView, pool_id: str, mean_pct: int, policy: Policy) -> bool:
    return view.gpu_load_pct(pool_id) * 100 > mean_pct * (100 + policy.rebalance_threshold_pct)


def _sources(view: FederationView, policy: Policy) -> list[Pool]:
    """Overloaded UP, non-draining pools, most loaded first."""
    mean = view.federation_gpu_load_pct()
    found = [p for p in view.pools() if p.status.health is Health.UP and p.drain_started_ms is None
             and _overloaded(view, p.id, mean, policy)]
    return sorted(found, key=lambda p: (-view.gpu_load_pct(p.id), p.id))


def _rebalance_deadlines(pools: tuple[Pool, ...], work: list[Workload], policy: Policy) -> list[int]:
    view = FederationView.build(pools, work, (), ())
    due = []
    for pool in _sources(view, policy):
        for w in view.running_on(pool.id):
            when = _rebalance_due(w, policy)
            if when is not None:
                due.append(when)
    return due


# -- one Tick --------------------------------------------------------------------------------


class _Tick:
    """The working state of one plan_tick: current workloads, the view, the budget and the moves."""

    def __init__(self, view: FederationView, workloads: tuple[Workload, ...], now_ms: int, index: int,
                 policy: Policy) -> None:
        self.view = view
        self.now = now_ms
        self.index = index
        self.policy = policy
        self.before = {w.id: w for w in workloads if not w.phase.terminal}
        self.work = dict(self.before)
        self.ids = sorted(self.work)
        self.pools_before = {p.id: p for p in view.pools()}
        self.moves: list[tuple[str, Move]] = []
        self.budget = policy.max_moves_per_tick
        self.flapping: frozenset[str] = frozenset()
        self.target_appeared = False

    # -- steps ---------------------------------------------------------------------------------

    def health(self, term_start_ms: int) -> None:
        for pool in self.view.pools():
            checked = check_health(pool, self.now, term_start_ms, self.policy)
            if checked.gpu_faults:
                recovered = clear_recovered(checked, self.now, self.policy)
                if recovered is not checked:                # units back after their hysteresis
                    checked = recovered
                    self.target_appeared = True
            if checked is not pool:
                self.view.set_pool(checked)
                if checked.status.health is Health.UP:      # its flap history was cleared
                    self.target_appeared = True
        self.flapping = flapping_pools(self.view.pools(), self.now, self.policy)

    def drain_start(self) -> None:
        for pool in self.view.pools():
            if pool.drain_started_ms is not None:
                for w in self._on(pool.id):
                    if w.phase in ACTIVE:
                        self._set(self._must(transition(w, Phase.DRAINING, f"pool {pool.id} is draining")))

    def failover(self) -> None:
        for wid in self.ids:
            w = self.work[wid]
            if not w.phase.holds_resources or w.placement is None:
                continue
            pool = self.view.pool(w.placement.pool)
            if pool is not None and pool.status.health is Health.UP:
                continue
            if self.budget <= 0:
                return
            self._move_or_requeue(w, FAILOVER, source_down=True)

    def retry_pending(self) -> None:
        up_times = _up_times(self.view.pools())
        due = [w for w in self.work.values() if w.phase is Phase.PENDING
               and (self.target_appeared or _pending_due(w, up_times, self.policy) <= self.now)]
        for w in sorted(due, key=lambda w: (-w.spec.priority, w.submitted_index, w.id)):
            if self.budget <= 0:
                return
            decision = self._attempt(w, self.flapping, self.policy.preemption)
            if decision.placement is None:
                self._set(replace(w, tried_ms=self.now, explanation=encode_explanation(decision.explanation)))
            else:
                self._land(w, decision, RETRY, source_down=False)

    def return_home(self) -> None:
        pools = {p.id: p for p in self.view.pools()}
        everyone = frozenset(pools)
        for wid in self.ids:
            w = self.work[wid]
            back = _return_due(w, pools, self.policy)
            if back is None or back[0] > self.now:
                continue
            if self.now >= back[1]:              # the window closed before a Tick could try: give up
                self._set(replace(w, tried_ms=self.now))
                continue
            if self.budget <= 0:
                return
            decision = self._attempt(w, everyone - {w.home_pool}, preempt=False)
            if decision.placement is None:
                self._stay(w, decision)
            else:
                self._land(w, decision, RETURN, source_down=False)

    def drain_end(self) -> None:
        for pool in self.view.pools():
            if pool.drain_started_ms is None or self.now < pool.drain_started_ms + self.policy.drain_ms:
                continue
            for w in self._on(pool.id):
                if self.budget <= 0:
                    return
                self._move_or_requeue(w, DRAIN, source_down=False)

    def rebalance(self) -> None:
        for source in _sources(self.view, self.policy):
            mean = self.view.federation_gpu_load_pct()
            candidates = [w for w in self._on(source.id) if (d := _rebalance_due(w, self.policy)) is not None
                          and d <= self.now]
            for w in sorted(candidates, key=lambda w: (w.spec.priority, w.spec.gpus, w.id)):
                if not _overloaded(self.view, source.id, mean, self.policy):
                    break
                if self.budget <= 0:
                    return
                busy = frozenset(p.id for p in self.view.pools() if _overloaded(self.view, p.id, mean, self.policy))
                decision = self._attempt(w, self.flapping | busy | {source.id}, preempt=False)
                target = decision.placement
                if target is not None:
                    self.view.book(replace(w, placement=target))
                    fits = not _overloaded(self.view, target.pool, mean, self.policy)
                    self.view.release(w.id)
                    if fits:
                        self._land(w, decision, REBALANCE, source_down=False)
                        continue
                self._stay(w, decision)

    def gpu_failover(self, w: Workload, why: str) -> None:
        """Move work off a failed worker or unit: like a failover, but its own pool stays a target."""
        source = w.placement.pool if w.placement is not None else ""
        reason = f"{GPU_FAULT}: {why}"
        if self.budget > 0:
            decision = self._attempt(w, self.flapping, self.policy.preemption)
            if decision.placement is not None:
                self._land(w, decision, GPU_FAULT, source_down=True)
                landed = replace(self.work[w.id], reason=reason)
                self._set(landed)
                self.view.book(landed)   # the view holds the workload as stored
                return
            pending = self._must(transition(w, Phase.PENDING, f"{reason}; {decision.explanation.note}"))
            pending = replace(pending, tried_ms=self.now, explanation=encode_explanation(decision.explanation))
        else:   # over this report's budget: released now, tried by the next Tick (due at once: never tried)
            self.view.release(w.id)
            pending = replace(self._must(transition(w, Phase.PENDING, reason)), tried_ms=None)
        self._record(pending, Move(self.now, self.index, source, "", GPU_FAULT))

    # -- moves ---------------------------------------------------------------------------------

    def _attempt(self, w: Workload, avoid: frozenset[str], preempt: bool) -> Decision:
        """Ask the scheduler where `w` should go, with its own booking released (callers re-book)."""
        self.budget -= 1
        self.view.release(w.id)
        allowed = preempt and self.policy.preemption
        policy = self.policy if allowed == self.policy.preemption else replace(self.policy, preemption=False)
        asking = replace(w, phase=Phase.PENDING, placement=None)
        request_id = f"tick/{w.id}".encode()
        decision = place(self.view, asking, index=self.index, request_id=request_id, policy=policy, avoid=avoid)
        if len(decision.preempted) > self.budget:   # it would break the cap: try without preempting
            policy = replace(policy, preemption=False)
            decision = place(self.view, asking, index=self.index, request_id=request_id, policy=policy, avoid=avoid)
        return decision

    def _move_or_requeue(self, w: Workload, reason: str, source_down: bool) -> None:
        source = w.placement.pool if w.placement is not None else ""
        avoid = self.flapping | {source}
        decision = self._attempt(w, avoid, self.policy.preemption)
        if decision.placement is not None:
            self._land(w, decision, reason, source_down)
            return
        why = "is down" if reason == FAILOVER else "was drained"
        note = decision.explanation.note
        pending = self._must(transition(w, Phase.PENDING, f"{reason}: pool {source} {why}; {note}"))
        pending = replace(pending, tried_ms=self.now, explanation=encode_explanation(decision.explanation))
        self._record(pending, Move(self.now, self.index, source, "", reason))

    def _land(self, w: Workload, decision: Decision, reason: str, source_down: bool) -> None:
        placement = decision.placement
        assert placement is not None
        for victim_id in sorted(decision.preempted):
            self._preempt(victim_id, w.id)
        phase = Phase.PLACED if w.phase is Phase.PENDING else landing_phase(w.phase, source_down)
        moved = self._must(transition(w, phase, reason, placement))
        moved = replace(moved, placed_ms=self.now, home_pool=w.home_pool or placement.pool, tried_ms=None,
                        explanation=encode_explanation(decision.explanation),
                        last_load_move_ms=self.now if reason == REBALANCE else w.last_load_move_ms)
        source = w.placement.pool if w.placement is not None else ""
        self.view.book(moved)
        self._record(moved, Move(self.now, self.index, source, placement.pool, reason))

    def _preempt(self, victim_id: str, by: str) -> None:
        victim = self.work.get(victim_id) or self.view.booked(victim_id)
        self.view.release(victim_id)
        if victim is None:
            return
        self.budget -= 1
        source = victim.placement.pool if victim.placement is not None else ""
        pending = self._must(transition(victim, Phase.PENDING, f"preempted by {by}"))
        self._record(replace(pending, tried_ms=self.now), Move(self.now, self.index, source, "", PREEMPTED))

    def _stay(self, w: Workload, decision: Decision) -> None:
        """A voluntary move found nothing: the workload keeps its place and remembers the try."""
        self.view.book(w)
        self._set(replace(w, tried_ms=self.now, explanation=encode_explanation(decision.explanation)))

    def _record(self, w: Workload, move: Move) -> None:
        self._set(record_move(w, move))
        self.moves.append((w.id, move))

    # -- bookkeeping ---------------------------------------------------------------------------

    def _on(self, pool_id: str) -> list[Workload]:
        """The current versions of the workloads holding resources on the pool, by id."""
        return [self.work[b.id] for b in self.view.running_on(pool_id) if b.id in self.work]

    def _set(self, w: Workload) -> None:
        self.work[w.id] = w

    @staticmethod
    def _must(result: Workload | str) -> Workload:
        if isinstance(result, str):   # orchestration only asks for transitions the table allows
            raise AssertionError(result)
        return result

    def plan(self) -> TickPlan:
        pools = tuple(p for p in self.view.pools() if self.pools_before.get(p.id) != p)
        workloads = tuple(self.work[i] for i in sorted(self.work) if self.work[i] != self.before.get(i))
        return TickPlan(pools, workloads, tuple(self.moves))
