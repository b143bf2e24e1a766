"""Chart artifacts of ``code_run``, as the server takes them from a sandbox.

The sandbox prints a chart as an artifact line (see ``cove.agent.artifacts``); the
agent sends each one apart from the output. What arrives is untrusted: the server
keeps at most ``CHART_LIMIT`` bytes of charts per run, and only those that are valid
JSON of Daytona's chart shape with the types the SDK accepts (others are dropped, as
Daytona's SDK skips an artifact it cannot parse). Nothing else is read from them: a
chart's ``png`` is passed on as the string it is.
"""

from __future__ import annotations

from pydantic import ValidationError

from cove.schemas.toolbox import Chart, ChartArtifact

# Bytes of chart artifacts one code run may return (the agent keeps to it too).
CHART_LIMIT = 4 * 1024 * 1024


class ChartCollector:
    """The valid charts among the artifacts of one run, within ``limit`` bytes."""

    def __init__(self, limit: int = CHART_LIMIT) -> None:
        self.charts: list[Chart] = []
        self.dropped = 0
        self._room = limit

    def add(self, payload: bytes) -> None:
        """Keep the chart ``payload`` holds (an artifact line after its marker), if it
        fits the budget and is a valid chart; else count it as dropped."""
        if len(payload) > self._room:
            self.dropped += 1
            return
        self._room -= len(payload)
        try:
            self.charts.append(ChartArtifact.model_validate_json(payload).value)
        except ValidationError:
            self.dropped += 1
