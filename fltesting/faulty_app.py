"""ClientApp component of the test-only app bundle of the Ray simulation test: partition 1 fails in round 1.

``tests/federated/test_simulation_e2e.py`` copies the app, points ``[tool.flwr.app.components] clientapp`` at
``fltesting.faulty_app:app`` and adds this package to the copy's ``fab-include``; the shipped bundle has neither.
"""

from fltesting.faults import faulty_client_app

FAILING_PARTITION = 1
FAILING_ROUND = 1

app = faulty_client_app(FAILING_PARTITION, FAILING_ROUND)
