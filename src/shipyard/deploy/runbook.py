"""The runbook of a model, rendered from its policy: the document and the behaviour are the same
object, so they cannot drift apart. Every command in it is a real ``shipyard`` command."""

from __future__ import annotations

from shipyard.deploy.policy import ApprovalRule, Policy

SPENDING_NAMES = {"pocock": "Pocock-type", "obrien_fleming": "O'Brien–Fleming-type"}
METRIC_TEXT = {
    "error_rate": (
        "error rate (exact Poisson-rate test)",
        "canary error rate − stable error rate ≥ {t:.2%} (absolute)",
    ),
    "latency": (
        "latency (Mann–Whitney U + Hodges–Lehmann shift)",
        "the whole {c:.0%} interval of the shift ≥ {t:.0%} of the stable median",
    ),
    "latency_spread": (
        "latency spread (Brown–Forsythe)",
        "canary's mean absolute deviation ≥ {t:g} × stable's",
    ),
    "prediction_shift": (
        "prediction distribution (KS, or chi-square for classes)",
        "KS D (or Cramér's V) ≥ {t:g}",
    ),
    "quality": (
        "quality on late labels (exact rate test on wrong predictions)",
        "canary's share of wrong predictions − stable's ≥ {t:.0%}",
    ),
}


def _who(rule: ApprovalRule, policy: Policy) -> str:
    if rule.count == 0:
        return "no approval is needed"
    if rule.roles:
        members = sorted({m for r in rule.roles for m in policy.roles[r]})
        whom = f"members of {', '.join(rule.roles)} ({', '.join(members)})"
    else:
        whom = "anyone"
    eyes = "; the author of the version may not approve it" if rule.four_eyes else ""
    return f"{rule.count} distinct approver(s) among {whom}{eyes}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def render_runbook(model: str, policy: Policy, *, has_policy: bool = True) -> str:
    """Markdown: approvals, how and where it is deployed, what happens on failure, rollback."""
    a = policy.analysis
    lines = [
        f"# Runbook: deploying `{model}`",
        "",
        (
            "Generated from the model's deployment policy; change the policy, not this page."
            if has_policy
            else "This model has no deployment policy: these are Shipyard's defaults. "
            f"Set one with `shipyard deployments set-policy {model} policy.yaml`."
        ),
        "",
        "## 1. Approvals",
        "",
        f"- **To start** a rollout: {_who(policy.approvals.start, policy)}.",
        f"- **To speed up** (promote past a canary step early): "
        f"{_who(policy.approvals.speedup, policy)}.",
        "",
        "```sh",
        "shipyard approve ROLLOUT                 # approve the start",
        "shipyard approve ROLLOUT --for speedup   # approve an early promotion",
        "```",
        "",
        "Each approver approves as themselves: with a control plane (`SHIPYARD_URL`), the "
        "identity of their token; on the database directly, `--as USER` or `SHIPYARD_USER`.",
        "",
        "## 2. How it is deployed",
        "",
        "```sh",
        f"shipyard deploy {model} --version V",
        "shipyard rollout status ROLLOUT",
        "```",
        "",
        f"Environments, in order: {' → '.join(policy.environments)}.",
        "",
    ]
    if "staging" in policy.environments:
        st = policy.staging
        lines += [
            "### Staging",
            "",
            (
                f"Smoke check: the version loads (sha256 verified), answers {st.sample_rows} "
                f"sample rows, each within {st.max_latency_ms:g} ms. "
                "A failed smoke check ends the rollout as `failed`; no traffic moved."
                if st.smoke
                else "No smoke check."
            ),
            "",
        ]
    if policy.uses_canary():
        c = policy.canary
        lines += [
            "### Release stages (sticky: a user keeps one version, moving stable → canary only)",
            "",
            "| stage | who gets the new version | at least | at least samples | at most "
            "| kind | α it may spend |",
            "|---|---|---|---|---|---|---|",
        ]
        for stage in policy.stages():
            if stage.kind == "shadow":
                shadow = c.shadow
                assert shadow is not None
                lines.append(
                    f"| {stage.index + 1} | nobody: answers copies of {shadow.share_pct:g} % of "
                    f"live requests after the stable version answered them | | "
                    f"{shadow.min_rows} rows | {_duration(shadow.max_wait_s)} | {stage.kind} "
                    f"| {stage.alpha:.2g} |"
                )
                continue
            if stage.step is None:
                replay = c.replay
                assert replay is not None
                lines.append(
                    f"| {stage.index + 1} | nobody: replays the stable version's logged requests "
                    f"| | {replay.min_rows} rows | {replay.max_rows} rows, logged in the last "
                    f"{_duration(replay.since_s)} | {stage.kind} | {stage.alpha:.2g} |"
                )
                continue
            step = c.steps[stage.step]
            who = step.match.rule().describe() if step.match else f"{step.weight_pct:g} %"
            lines.append(
                f"| {stage.index + 1} | {who} | {_duration(step.min_duration_s)} | "
                f"{step.min_samples} per version | {_duration(step.max_duration(c.interval_s))} "
                f"| {stage.kind} | {stage.alpha:.2g} |"
            )
        cohorts = (
            "Each rollout draws its canary users afresh (a hash of model, rollout and user), so "
            "no group of users carries every first step"
        )
        if c.exclude_recent_days > 0:
            cohorts += (
                f"; users who were in a canary of this model in the last "
                f"{c.exclude_recent_days:g} days are kept out while the weight leaves room"
            )
        targeted = any(st.targeted for st in c.steps)
        replay_text = (
            " Before any user, the new version answers the rows the stable version answered in "
            "its sampled request log, side by side with it, and is judged against the stable "
            "version's recorded answers with paired tests (errors, latency, and answers: it "
            f"fails when it changes more than {c.replay.max_changed:g} of them, in share or in "
            "the stable answers' standard deviations); "
            "a failed replay rolls back with a diagnosis, and no user was ever served by it. "
            "With no request log of the stable version, a rollout cannot start."
            if c.replay is not None
            else ""
        )
        if c.shadow is not None:
            replay_text += (
                " Then the model servers copy "
                f"{c.shadow.share_pct:g} % of the requests the stable version answered to the "
                "new version, off the users' path (a full queue drops copies, counted in "
                "`shipyard_http_shadow_copies_total`), and the two answers to the same inputs "
                "are judged with the same paired tests (errors and answers; latency waits for "
                f"the live steps), once {c.shadow.min_rows} rows are in; fewer after "
                f"{_duration(c.shadow.max_wait_s)} end the rollout `failed`. A failed shadow "
                "rolls back with a diagnosis, and no user was ever served by the new version."
            )
        lines += [
            "| — | 100 % (production) | | | | | |",
            "",
            cohorts
            + "."
            + (
                " Targeted users stay on the new version through the weighted steps."
                if targeted
                else ""
            )
            + replay_text,
            "",
            f"Analysis every {_duration(c.interval_s)} on the canary and the stable version "
            "over the same window. A metric fails only when its test rejects **and** the "
            "effect reaches its floor:",
            "",
            "| metric | fails when |",
            "|---|---|",
        ]
        for m in a.metrics:
            title, rule = METRIC_TEXT[m.name]
            lines.append(f"| {title} | {rule.format(t=m.floor, c=a.confidence)} |")
        lines += [
            "",
            (
                f"False-rollback budget: one α = {a.alpha:g} for the whole release, spent over "
                f"every look of every stage with the {SPENDING_NAMES[a.spending]} spending "
                f"function and split evenly over the {len(a.metrics)} metric(s), so neither "
                "looking every interval nor adding stages inflates false rollbacks."
                if a.budget == "release"
                else f"False-rollback budget: α = {a.alpha:g} per rollout, split over stages × "
                f"metrics (α = {policy.alpha_per_test():.2g} each) and spent over the looks of "
                f"a stage with the {SPENDING_NAMES[a.spending]} spending function, so looking "
                "every interval does not inflate false rollbacks."
            ),
            "",
            f"Too little traffic: **{a.on_no_data}**"
            + (
                " (the step is extended until it has enough, and paused at its maximum)."
                if a.on_no_data == "extend"
                else "."
            ),
            "",
            "```sh",
            "shipyard rollout pause ROLLOUT     # hold where it is",
            "shipyard rollout resume ROLLOUT",
            "shipyard rollout promote ROLLOUT   # skip the rest of this step (speed-up approvals)",
            "```",
            "",
        ]
    lines += [
        "## 3. When a deployment fails",
        "",
        "On a failed canary: "
        + ", ".join(
            {
                "rollback": "all traffic returns to the stable version",
                "notify": "an alert fires (`shipyard_rollout_failed`)",
                "pause": "the rollout pauses with the canary's traffic as it is",
            }[x]
            for x in policy.on_failure
        )
        + "; a diagnosis (failed metrics with their evidence, drifting input features, "
        "example failing requests) is stored with the rollout.",
        "",
        "```sh",
        "shipyard rollout status ROLLOUT    # verdicts, evidence and the diagnosis",
        "shipyard rollout abort ROLLOUT     # stop now: traffic back to stable",
        "```",
        "",
        "## 4. How to roll back",
        "",
        "One command, also after a rollout completed; model servers pick the change up within "
        "their refresh interval (0.5 s by default):",
        "",
        "```sh",
        f"shipyard rollback {model}                  # to the previous production version",
        f"shipyard rollback {model} --to-version V   # to a named version",
        f"shipyard deployments history {model}       # what was in production when",
        "```",
        "",
    ]
    return "\n".join(lines)
