"""The number in Grafana's text forms of an alert's value, for ``$value`` and the event.

Grafana writes an alert instance's value in three forms (``grafana/grafana``
``pkg/services/ngalert/api/prometheus/api_prometheus.go`` ``FormatValues``, and
``pkg/services/ngalert/eval/extract_md.go`` ``extractEvalString``):

* one condition value: ``strconv.FormatFloat(v, 'e', -1, 64)`` → ``1.1e+00``;
* several: ``"<refID>: <value>"`` sorted and joined by ``", "`` → ``B0: 1.1e+00, B1: 1.4e+00``;
* none (classic conditions, math): the evaluation string,
  ``[ var='B' labels={instance=10.0.0.1:9100} value=12 ]`` (``metric='…'`` too for classic
  conditions; ``value=null`` when there was none), several joined by ``", "``.

The webhook's ``valueString`` is the same evaluation string. The first value is the one used
(refIDs sorted, as Grafana prints them); ``null`` and anything unreadable are NaN. Labels inside
``{…}`` are skipped, so ``instance=10.0.0.1:9100`` is never read as the value.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_value"]

_FLOAT = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|Inf|NaN)"
_PLAIN = re.compile(rf"\s*({_FLOAT})\s*")
_EVAL_VALUE = re.compile(r"\svalue=(\S+?)\s*\]")
_REF_VALUE = re.compile(rf"[^,:\[\]]+:\s*({_FLOAT})\s*(?:,|$)")


def parse_value(text: object) -> float:
    """The first value of Grafana's ``value`` / ``valueString`` text; NaN when there is none."""
    if isinstance(text, bool):
        return math.nan
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str) or not text.strip():
        return math.nan
    if (m := _PLAIN.fullmatch(text)) is not None:
        return _float(m.group(1))
    if "[" in text:  # evaluation string: skip labels={...}, read value=
        m = _EVAL_VALUE.search(re.sub(r"labels=\{[^}]*\}", "labels={}", text))
        return _float(m.group(1)) if m else math.nan
    if (m := _REF_VALUE.match(text)) is not None:
        return _float(m.group(1))
    return math.nan


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.nan
