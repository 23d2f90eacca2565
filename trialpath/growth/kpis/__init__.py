"""The onboarding KPIs, read per persona, cohort, experiment arm or channel (the experiment
report that compares arms against the control is `trialpath.growth.experiments`).

Every KPI is one documented function `name(engine, filters, by=None) -> list[KpiValue]`, one
value per group. Each is computed in SQL, aggregated in the database, except where the
portable SQL cannot do it: medians and percentiles (no portable percentile function), and
survey scores (a JSON property that may hold text), where the database returns one row per
user or answer and Python finishes. Two expressions differ between SQLite and PostgreSQL (the
ISO week of a timestamp, seconds between two timestamps); both live in `kpis.sql.Dialect`.

Durations and days are journey time: each trial records its clock (`trials.seconds_per_day`,
86400 for real time), so a demo run at a few seconds a day reads in the same hours and days as
production.

Population: the trials whose signup falls within `Filters` (since inclusive, until
exclusive). Outcomes (activated, converted, events, messages) are read as they stand now,
whenever they happened: a cohort's KPIs keep moving until its trials are over. Only the 7-day
retention uses `until` (or now) as the date it is read at.

The rest of the code reads the KPIs here (`kpis.X`): `KPIS` and `compute_kpis`, and the
names imported below from the modules of this package that hold them: `values` (filters,
splits, values, CSV), `sql` (the tables, the journey's milestones and key events, SQL building
blocks, durations), the KPIs by family in `activation`, `revenue`, `surveys` and `outreach`,
and the dashboard's data in `dashboard`.

The definitions, one paragraph each, are in docs/kpis.md.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from trialpath.growth.kpis.activation import (
    activation_rate as activation_rate,
    adoption_rate as adoption_rate,
    onboarding_completion as onboarding_completion,
    retention_7d as retention_7d,
    time_to_first_value as time_to_first_value,
    time_to_proficiency as time_to_proficiency,
)
from trialpath.growth.kpis.dashboard import (
    FUNNEL_STEPS as FUNNEL_STEPS,
    clocks as clocks,
    funnel as funnel,
    headline as headline,
    retention_curves as retention_curves,
    ttfv_hours as ttfv_hours,
)
from trialpath.growth.kpis.outreach import (
    messages_per_user as messages_per_user,
    qualifier_answer_rate as qualifier_answer_rate,
    support_reach_rate as support_reach_rate,
    support_task_rate as support_task_rate,
    unsubscribe_rate as unsubscribe_rate,
)
from trialpath.growth.kpis.revenue import (
    churn_rate as churn_rate,
    cltv as cltv,
    incremental_conversion as incremental_conversion,
    incremental_revenue as incremental_revenue,
    referral_rate as referral_rate,
    trial_to_paid as trial_to_paid,
    upsell_rate as upsell_rate,
)
from trialpath.growth.kpis.sql import (
    CONVERTED as CONVERTED,
    ENDED as ENDED,
    E as E,
    T as T,
    milestone_durations as milestone_durations,
    population as population,
)
from trialpath.growth.kpis.surveys import (
    ces as ces,
    csat as csat,
    csat_onboarding as csat_onboarding,
    survey_scores as survey_scores,
)
from trialpath.growth.kpis.values import (
    ALL as ALL,
    NO_EXPERIMENT_ARM as NO_EXPERIMENT_ARM,
    SMALL_N as SMALL_N,
    Filters as Filters,
    KpiError as KpiError,
    KpiValue as KpiValue,
    Split as Split,
    check_split as check_split,
    make_filters as make_filters,
    parse_bound as parse_bound,
    to_csv as to_csv,
)


class KpiFunction(Protocol):
    def __call__(
        self, engine: Engine, filters: Filters, by: Split | None = None, /
    ) -> list[KpiValue]: ...


KPIS: dict[str, KpiFunction] = {
    "time_to_first_value": time_to_first_value,
    "activation_rate": activation_rate,
    "onboarding_completion": onboarding_completion,
    "adoption_rate": adoption_rate,
    "time_to_proficiency": time_to_proficiency,
    "retention_7d": retention_7d,
    "trial_to_paid": trial_to_paid,
    "churn_rate": churn_rate,
    "csat": csat,
    "csat_onboarding": csat_onboarding,
    "ces": ces,
    "upsell_rate": upsell_rate,
    "referral_rate": referral_rate,
    "cltv": cltv,
    "messages_per_user": messages_per_user,
    "unsubscribe_rate": unsubscribe_rate,
    "qualifier_answer_rate": qualifier_answer_rate,
    "support_task_rate": support_task_rate,
    "support_reach_rate": support_reach_rate,
    "incremental_conversion": incremental_conversion,
    "incremental_revenue": incremental_revenue,
}
"""Every KPI function, in the order they are shown (completion right after activation)."""


def compute_kpis(engine: Engine, filters: Filters, by: Split | None = None) -> list[KpiValue]:
    """Every KPI of `KPIS`, one row per KPI and group."""
    by = check_split(by)
    return [value for function in KPIS.values() for value in function(engine, filters, by)]
