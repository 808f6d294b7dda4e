"""Test harnesses for finpredict (a dev-only workspace member: no service or image depends on it).

Every test suite and benchmark imports its harness from here, never from another test folder:

- ``process``: a service as a subprocess on a free loopback port (``start_service``), ``wait_for``;
- ``scrape``: a service's Prometheus ``/metrics``; ``proxy``: a slow server or uplink (``DelayProxy``);
- ``monitoring``: real Prometheus and Alertmanager, webhook and OTLP receivers; ``pki``: test certificates;
- ``models``: synthetic records and small real XGBoost models; ``names``: unique names;
- ``evaluation``: what the pipeline registers with an evaluated version (the four passing gates,
  lineage, a reference profile), so a test's version may become ``production``;
- per suite: ``registry``, ``serving`` (Ray, model server), ``gateway`` (the whole stack), ``cli``,
  ``monitor``, ``fuzz``, ``security``, ``deploy``, ``pipeline`` (a throw-away DVC repository),
  ``wandb_log`` (offline W&B run files), ``drift_reference`` (numpy reference of drift_core),
  ``triton`` (the standard OIP client, in a process of its own);
- ``paths``: the repository root (the kit runs from a checkout).
"""
