"""What a matching round did: how many units moved per group, objective gains, sweeps and timings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from strategies.matching.align import AlignResult
from strategies.matching.permute import Perms, moved_fraction, split_block_permutation
from strategies.matching.spec import PermutationSpec


@dataclass
class GroupStats:
    """One permutation group (or the block permutation of a tie, or one block's within-block permutation).

    Attributes
    ----------
    size
        Units permuted.
    moved
        Client id -> fraction of positions holding a different unit than in the client (0 = identity).
    seconds
        Time spent building scores and solving assignments for this group (a tie's groups share its time).
    """

    size: int
    moved: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def mean_moved(self) -> float:
        """Mean moved fraction over clients (0 without clients)."""
        return sum(self.moved.values()) / len(self.moved) if self.moved else 0.0


@dataclass
class MergeDiagnostics:
    """Diagnostics of :func:`strategies.matching.merge.match_and_merge`.

    Attributes
    ----------
    groups
        Group name -> stats. A tie adds its block permutation under the tie's name (e.g.
        ``"blocks.0.attn.heads"``, P_head) and each block's within-block permutation under
        ``"<group>[<block>]"`` (e.g. ``"blocks.0.attn.qk[1]"``, P_qk for head 1).
    objective_gain
        Client id -> ``J(final) - J(identity)`` of its last alignment (>= 0).
    sweeps
        Client id -> coordinate-ascent sweeps over all its alignments.
    alignments
        Client id -> alignments run (0 for the reference client).
    reference
        ``"previous"`` or the id of the reference client.
    iterations
        Leave-one-out passes run.
    noise_variances
        Tensor -> noise variance used in the last pass.
    server_steps
        Pool (``"encoder"`` or a task) -> ``eta``, the fraction of the step from the previous global model to
        the clients' weighted average.
    seconds
        Wall time of the whole merge.
    soft_offdiagonal
        With soft alignment only: group -> mean over the softened clients of ``1 - trace(M) / n``, the
        fraction of each unit's weight its transport map takes from units other than its hard match.
    """

    groups: dict[str, GroupStats]
    objective_gain: dict[str, float]
    sweeps: dict[str, int]
    alignments: dict[str, int]
    reference: str
    iterations: int
    noise_variances: dict[str, float]
    server_steps: dict[str, float]
    seconds: float
    soft_offdiagonal: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat numbers for logging and metric records.

        Keys: ``matching/moved/<group>`` (mean over clients), ``matching/objective-gain`` and
        ``matching/sweeps`` (means over aligned clients), ``matching/iterations``, ``matching/seconds``,
        ``matching/eta/<pool>`` and, with soft alignment, ``matching/soft-offdiagonal`` (mean over groups).
        """
        out = {f"matching/moved/{name}": stats.mean_moved for name, stats in self.groups.items()}
        clients = list(self.objective_gain)
        out["matching/objective-gain"] = sum(self.objective_gain.values()) / len(clients) if clients else 0.0
        out["matching/sweeps"] = sum(self.sweeps.values()) / len(clients) if clients else 0.0
        out["matching/iterations"] = float(self.iterations)
        out["matching/seconds"] = self.seconds
        out.update({f"matching/eta/{pool}": eta for pool, eta in self.server_steps.items()})
        if self.soft_offdiagonal:
            out["matching/soft-offdiagonal"] = sum(self.soft_offdiagonal.values()) / len(self.soft_offdiagonal)
        return out


def collect_diagnostics(
    spec: PermutationSpec,
    perms: Mapping[str, Perms],
    results: Mapping[str, Sequence[AlignResult]],
    *,
    reference: str,
    iterations: int,
    noise: Mapping[str, float],
    server_steps: Mapping[str, float],
    seconds: float,
    soft_offdiagonal: Mapping[str, float] | None = None,
) -> MergeDiagnostics:
    """Summarise the final permutations and the alignment results of every client."""
    groups: dict[str, GroupStats] = {}
    for item in spec.solve_items:
        spent = sum(r.seconds.get(item.name, 0.0) for rs in results.values() for r in rs)
        for group in item.groups:
            groups[group] = GroupStats(spec.group_sizes[group], seconds=spent)
        if item.tie is not None:
            tie = item.tie
            groups[tie.name] = GroupStats(tie.blocks, seconds=spent)
            for group in tie.groups:
                for block in range(tie.blocks):
                    groups[f"{group}[{block}]"] = GroupStats(spec.group_sizes[group] // tie.blocks)
    for cid, client_perms in perms.items():
        for group, perm in client_perms.items():
            groups[group].moved[cid] = moved_fraction(perm)
        for tie in spec.ties:
            for group in tie.groups:
                block_perm, within = split_block_permutation(client_perms[group], tie.blocks)
                groups[tie.name].moved[cid] = moved_fraction(block_perm)
                for block in range(tie.blocks):
                    groups[f"{group}[{block}]"].moved[cid] = moved_fraction(within[block])
    return MergeDiagnostics(
        groups=groups,
        objective_gain={cid: rs[-1].objective[-1] - rs[-1].objective_identity for cid, rs in results.items() if rs},
        sweeps={cid: sum(r.sweeps for r in rs) for cid, rs in results.items()},
        alignments={cid: len(rs) for cid, rs in results.items()},
        reference=reference,
        iterations=iterations,
        noise_variances=dict(noise),
        server_steps=dict(server_steps),
        seconds=seconds,
        soft_offdiagonal=dict(soft_offdiagonal or {}),
    )
