"""What the gate asks of the shadow (the waiting challenger's answers on live traffic, summarised
by ``core.store.shadow``) before a reviewer may approve the challenger. Light on purpose: the
settings build one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

# Where the gate records what a waiting challenger's approval must find in its shadow.
SHADOW_REQUIREMENT_TAG = "promotion.shadow_requirement"


class ShadowShortfall(ValueError):
    """The shadow's figures do not (yet) allow approving the waiting challenger."""


class ShadowSummaries(Protocol):
    def summary(
        self, model_name: str, challenger_version: str, champion_version: str | None = None, most: int = 10
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ShadowRequirement:
    """What the gate asks of the shadow before a waiting challenger may be approved (a minimum
    agreement with the champion, a minimum accuracy on the labels that arrived, or both)."""

    min_agreement: float | None = None
    min_accuracy: float | None = None
    min_rows: int = 500
    min_labels: int = 50

    @property
    def asked(self) -> bool:
        return self.min_agreement is not None or self.min_accuracy is not None

    def shortfall(self, summary: dict[str, Any]) -> str | None:
        """Why the shadow's figures do not yet allow the challenger, or None when they do."""
        if not self.asked:
            return None
        rows, version = summary["rows"], summary["challenger_version"]
        if rows < self.min_rows:
            return (
                f"the shadow has scored {rows} texts with challenger version {version}, the gate "
                f"needs {self.min_rows}: wait for more traffic (or lower EMOTION_SHADOW_MIN_ROWS)"
            )
        if self.min_agreement is not None and summary["agreement"] < self.min_agreement:
            return (
                f"the challenger agrees with the champion on {summary['agreement']:.1%} of "
                f"{rows} live texts, the gate needs {self.min_agreement:.1%}"
            )
        if self.min_accuracy is not None:
            labelled, accuracy = summary["labelled"], summary["challenger_accuracy"]
            if labelled < self.min_labels:
                return (
                    f"{labelled} of the shadow's texts have a label, the gate needs "
                    f"{self.min_labels} to judge the challenger's accuracy"
                )
            if accuracy < self.min_accuracy:
                return (
                    f"the challenger is right on {accuracy:.1%} of {labelled} labelled live texts, "
                    f"the gate needs {self.min_accuracy:.1%}"
                )
        return None

    def to_tag(self) -> str:
        """The requirement as the gate records it on a version it leaves waiting."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> ShadowRequirement:
        """What the gate recorded on a version (nothing asked when it recorded nothing)."""
        recorded = tags.get(SHADOW_REQUIREMENT_TAG)
        return cls(**json.loads(recorded)) if recorded else cls()

    def stricter(self, other: ShadowRequirement) -> ShadowRequirement:
        """Each bar at the higher of the two: the gate's record holds whoever approves, and an
        approver's settings may only add to it."""

        if not other.asked:
            return self
        if not self.asked:
            return other

        def higher(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else max(a, b)

        return ShadowRequirement(
            higher(self.min_agreement, other.min_agreement),
            higher(self.min_accuracy, other.min_accuracy),
            max(self.min_rows, other.min_rows),
            max(self.min_labels, other.min_labels),
        )

    def check_for(
        self, shadow: Callable[[], ShadowSummaries], model_name: str
    ) -> Callable[[str, str | None, dict[str, str]], dict[str, str]]:
        """The approval's check (``core.registry.approve_challenger``): the stricter of this
        requirement and the one the gate recorded on the version; raises ShadowShortfall while
        the figures fall short, else gives the tags that record them. ``shadow`` opens the
        shadow's log only when something is asked."""

        def check(
            challenger_version: str, champion_version: str | None, tags: dict[str, str]
        ) -> dict[str, str]:
            requirement = self.stricter(ShadowRequirement.from_tags(tags))
            if not requirement.asked:
                return {}
            summary = shadow().summary(model_name, challenger_version, champion_version)
            reason = requirement.shortfall(summary)
            if reason is not None:
                raise ShadowShortfall(reason)
            return {
                "shadow.rows": str(summary["rows"]),
                "shadow.agreement": f"{summary['agreement']:.4f}",
                "shadow.labelled": str(summary["labelled"]),
                "shadow.accuracy": ""
                if summary["challenger_accuracy"] is None
                else f"{summary['challenger_accuracy']:.4f}",
            }

        return check
