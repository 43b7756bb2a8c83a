"""Rules: sources → samples → alert instances (Prometheus semantics) → ``AlertEvent``s for the sink.

* ``engine``: ``RuleEvaluator``, the per-rule instance state machine;
* ``events``: what an instance's event says (labels, severity, title, description, panels);
* ``templates``: sandboxed Jinja2 with Prometheus spelling (``$labels``, ``$value``, ``humanize``);
* ``window``: panels → fully resolved ``PanelCapture``s (time window, size, vars);
* ``state``: SQLite persistence of instances, heartbeats and webhook fingerprints;
* ``scheduler``: ``RuleScheduler``, one APScheduler job per rule; ``slots``: where in its interval;
* ``runner``: ``RuleRunner``, the evaluators between runs and one run (source → sink → state);
* ``sources``: ``prometheus`` (instant query), ``grafana`` (mirror Grafana-managed alerts),
  ``schedule`` (reports), ``webhook`` (Alertmanager / Grafana contact point receiver).
"""
