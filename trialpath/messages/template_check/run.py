"""One run of the template check: its inputs, the worker's renderer, every send the journey
can make, the documented variables, and the findings so far (each kept once)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from trialpath.core.definition import PERSONAS, JourneyDefinition
from trialpath.delivery.preferences import UnsubscribeTokens
from trialpath.messages.samples import ALERT_MESSAGES, SampleUser, sample_alert, sample_context
from trialpath.messages.template_check.files import File
from trialpath.messages.template_check.jinja import Variables
from trialpath.messages.template_check.report import Finding, Severity
from trialpath.messages.templating import Product, Renderer


class CheckRun:
    """What the passes of a check share; `add` records a finding."""

    def __init__(
        self,
        root: Path,
        definition: JourneyDefinition,
        product: Product,
        public_url: str,
        sms_max_segments: int,
        samples: Sequence[SampleUser],
    ) -> None:
        self.root = root
        self.defn = definition
        self.product = product
        self.public_url = public_url.rstrip("/")
        self.sms_max_segments = sms_max_segments
        self.samples = samples
        self.renderer = Renderer(root)
        self.env = self.renderer.env
        self.text_env = SandboxedEnvironment(undefined=StrictUndefined)
        # Links like the worker's, signed for a sample user; only email and in-app get one.
        tokens = UnsubscribeTokens("template-check")
        self.unsubscribe_urls = {
            channel: f"{self.public_url}/v1/unsubscribe/{tokens.make('u-sample-1', channel)}"
            for channel in ("email", "in_app")
        }
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, int | None, str]] = set()
        self.files: dict[str, File] = {}
        self.used: set[str] = set()
        self.rendered = 0
        self.sends = self._journey_sends()
        documented = sample_context(
            product, "support", "support_alert", "business", "en", next(iter(samples))
        )
        # Every alert's facts: each alert template is rendered with its own when checked.
        documented["alert"] = {
            key: value
            for name in ALERT_MESSAGES
            for key, value in (sample_alert(name, "u", "business", "", True) or {}).items()
        }
        self.variables = Variables(documented, self.env)

    def add(
        self,
        severity: Severity,
        file: str,
        line: int | None,
        message: str,
        context: str = "",
        *,
        once: str = "",
    ) -> None:
        """Identical findings (other sample users, personas...) are kept once, with the first
        context; `once` names a problem to report only once per file whatever its wording."""
        key = (file, None, once) if once else (file, line, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(severity, file, line, message, context))

    def _journey_sends(self) -> list[tuple[str, str, str]]:
        """(message, channel, persona) for every send the journey can make."""
        sends: list[tuple[str, str, str]] = []
        for message, spec in self.defn.messages.items():
            channels = dict.fromkeys((*spec.channels, *((spec.fallback,) if spec.fallback else ())))
            for channel in channels:
                sends.extend((message, channel, persona) for persona in PERSONAS)
        for persona, path in self.defn.personas.items():
            for step in path.drip:
                sends.extend((step.message, channel, persona) for channel in step.channels)
        return sends
