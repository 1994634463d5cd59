"""Reproducible comparison of federated aggregation strategies for MTMedFormer (results in ``docs/RESULTS.md``).

Parts, each a module with a ``main(argv)`` and the flags ``--quick`` (smoke-test scale) and ``--out``:

- :mod:`.one_shot`: sites train independently, then FedAvg of their weights vs neuron matching vs the best site;
- :mod:`.iterative`: rounds of FedAvg, FedProx, FedAdam and BNP matching under Dirichlet label skew;
- :mod:`.bounds`: centralized training (upper bound) and local-only training (lower bound) on the same data;
- :mod:`.identity_check`: whether matching reduces to FedAvg after a shared start and one short local epoch;
- :mod:`.report`: tables (Markdown), plots (PNG) and the results JSON for the docs.

``python -m benchmarks.fl_comparison`` runs all of them in order (see ``docs/RESULTS.md`` for the exact commands).
"""
