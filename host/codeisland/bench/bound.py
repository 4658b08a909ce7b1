"""An upper bound on the net gain any relocation policy can reach on one benchmark trace.

The schedule problem, with full knowledge of the whole trace (every counted window):

    x[i,t] = 1 when island i is in the hot region during window t
    m[i,t] = 1 when island i is moved in before window t            (t >= 1)

    maximise  sum b[i,t] x[i,t] - sum c[i] m[i,t]
    s.t.      x[i,t] - x[i,t-1] <= m[i,t]                            (a resident island was moved)
              sum_i size[i] x[i,t] <= hot capacity                   (every window)
              sum_i size[i] m[i,t] <= per-SMI budget x SMIs per window (staging allowance)

  b[i,t]  what island i can save in window t when hot: ALL its modeled front-end miss cycles in
          that window at its origin (iTLB misses x itlb4k_miss_cycles + L1i misses x
          l1i_miss_cycles, from the `none` run).  No placement saves more on the island itself:
          the hot region cannot make a line fetch cheaper than a hit.
  c[i]    the move's cost as the policies are charged it (priority.CostModel.move_cost:
          staging bytes, fix-ups, the island's share of the SMI entries).

The relaxations keep it an upper bound of what the loop can do: the first counted window's hot
set is free (the policies' warm-up moves are not counted either), evictions and rollbacks cost
nothing, generations are unlimited, the SMI entry cost is charged pro rata.  Solved exactly as
an integer program (HiGHS through scipy.optimize.milp) when the instance is small; otherwise its
LP relaxation (HiGHS) is the bound, which is proven (an LP optimum is at least the integer
optimum).  When the integer solve runs out of time, HiGHS' proven dual bound is used if it is
tighter than the LP.

What it does not cover: a move can also lower OTHER islands' misses (fewer 4 KiB pages competing
for the iTLB, fewer L1i conflicts), which b does not credit.  So the bound is exact only for the
additive saving model; the report flags any policy whose measured gain exceeds it, and also gives
`all_misses_cycles`, the gain if every miss of every island vanished at no cost, which no policy
can exceed.  THE COST MODEL IS A MODEL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

# schedules with at most this many variables are solved as integer programs
EXACT_MAX_VARIABLES = 12_000
EXACT_TIME_LIMIT_S = 20.0


@dataclass(frozen=True)
class UpperBound:
    gain: float  # modeled cycles: the bound on (cycles of `none` - cycles of any policy)
    method: str  # "exact" (integer optimum), "milp-dual" or "lp" (proven relaxation)
    islands: int  # islands that can save anything (the others are left out: x = 0)
    windows: int
    seconds: float
    all_misses_cycles: float  # every miss of every island removed at no cost

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "gain": self.gain,
            "method": self.method,
            "islands": self.islands,
            "windows": self.windows,
            "seconds": round(self.seconds, 2),
            "all_misses_cycles": self.all_misses_cycles,
        }


def upper_bound(
    saving: np.ndarray,
    size: np.ndarray,
    move_cost: np.ndarray,
    capacity: int,
    window_bytes: int,
    time_limit: float = EXACT_TIME_LIMIT_S,
) -> UpperBound:
    """The bound for `saving` (windows x islands, cycles an island saves while hot); the
    integer program gets `time_limit` seconds before its dual bound or the LP is taken."""
    start = time.perf_counter()
    saving = np.maximum(np.asarray(saving, dtype=np.float64), 0.0)
    windows = saving.shape[0]
    keep = np.flatnonzero((saving.sum(axis=0) > 0) & (np.asarray(size) <= capacity))
    total = float(saving.sum())
    if windows == 0 or keep.size == 0:
        return UpperBound(0.0, "exact", 0, windows, time.perf_counter() - start, total)
    problem = _Schedule(saving[:, keep], np.asarray(size)[keep], np.asarray(move_cost)[keep],
                        capacity, window_bytes)  # fmt: skip
    gain, method = problem.solve(time_limit)
    return UpperBound(gain, method, int(keep.size), windows, time.perf_counter() - start, total)


class _Schedule:
    """The x/m program above in matrix form: variables x (T x n, row-major) then m (T-1 x n)."""

    def __init__(
        self, b: np.ndarray, size: np.ndarray, cost: np.ndarray, capacity: int, window: int
    ) -> None:
        self.T, self.n = b.shape
        T, n = self.T, self.n
        nx, nm = T * n, (T - 1) * n
        self.c = np.concatenate([-b.ravel(), np.tile(cost, T - 1)])  # minimise the negative
        # x[t,i] - x[t-1,i] - m[t,i] <= 0 for t >= 1
        rows = np.arange(nm)
        link = sparse.csr_matrix(
            (
                np.concatenate([np.ones(nm), -np.ones(nm), -np.ones(nm)]),
                (np.tile(rows, 3), np.concatenate([rows + n, rows, nx + rows])),
            ),
            shape=(nm, nx + nm),
        )
        cap = sparse.hstack(
            [sparse.kron(sparse.identity(T), size[None, :]), sparse.csr_matrix((T, nm))]
        )
        stage = sparse.hstack(
            [sparse.csr_matrix((T - 1, nx)), sparse.kron(sparse.identity(T - 1), size[None, :])]
        )
        self.A = sparse.vstack([link, cap, stage]).tocsr()
        self.ub = np.concatenate([np.zeros(nm), np.full(T, capacity), np.full(T - 1, window)])
        # an island larger than the staging allowance can only be hot from the start
        m_ub = np.tile((size <= window).astype(np.float64), T - 1)
        self.upper = np.concatenate([np.ones(nx), m_ub])

    def solve(self, time_limit: float = EXACT_TIME_LIMIT_S) -> tuple[float, str]:
        bounds = list(zip(np.zeros(len(self.c)), self.upper, strict=True))
        lp = linprog(self.c, A_ub=self.A, b_ub=self.ub, bounds=bounds, method="highs")
        if lp.status != 0:
            raise RuntimeError(f"upper bound LP failed: {lp.message}")
        best, method = -float(lp.fun), "lp"
        if len(self.c) <= EXACT_MAX_VARIABLES:
            ip = milp(
                self.c,
                constraints=LinearConstraint(self.A, -np.inf, self.ub),
                integrality=np.ones(len(self.c)),
                bounds=Bounds(np.zeros(len(self.c)), self.upper),
                options={"time_limit": time_limit, "disp": False},
            )
            if ip.status == 0:
                return -float(ip.fun), "exact"
            dual = getattr(ip, "mip_dual_bound", None)
            if dual is not None and np.isfinite(dual) and -float(dual) < best:
                best, method = -float(dual), "milp-dual"
        return best, method
