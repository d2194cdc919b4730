"""The alert and recording rules (promtool check + promtool's unit tests), the deploy's Prometheus
config, and the Grafana dashboard: valid JSON, the panels an operator needs, and every panel query
accepted by a real Prometheus that has the rules loaded."""

from __future__ import annotations

import json
import re
import subprocess
import time

import yaml

from tests.observability.conftest import DASHBOARD, PROMTOOL, REPO, RULES, RULES_TEST, needs_prometheus, needs_promtool


@needs_promtool
def test_promtool_checks_the_rules():
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass():
    out = subprocess.run([PROMTOOL, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_tests_evaluate_the_recording_group_before_the_alerts():
    """Unordered, promtool picks the groups' order at random and the alert tests flake."""
    groups = [g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]]
    order = yaml.safe_load(RULES_TEST.read_text())["group_eval_order"]
    assert sorted(order) == sorted(groups)
    assert order.index("maskq.recording") < order.index("maskq.alerts")


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path):
    """The rule tests compare real values: a wrong expectation is caught."""
    (tmp_path / RULES.name).write_text(RULES.read_text())
    broken = RULES_TEST.read_text().replace("is 250 jobs and growing", "is 249 jobs and growing")
    (tmp_path / RULES_TEST.name).write_text(broken)
    out = subprocess.run([PROMTOOL, "test", "rules", RULES_TEST.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0


def test_rules_cover_the_operator_needs():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    assert {"MaskqBacklogGrowing", "MaskqJobFailureRatioHigh", "MaskqNoCpuWorker", "MaskqBacklogWithoutWorkers",
            "MaskqInferenceSlow", "MaskqQueueWaitHigh"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert all(re.fullmatch(r"maskq:[a-z0-9_]+:[a-z0-9_]+|maskq:[a-z0-9_]+", r) for r in records), records
    # the deploy's Prometheus loads exactly this file (the unit test file beside it is no rule file)
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert [p.rsplit("/", 1)[-1] for p in prom["rule_files"]] == [RULES.name]


@needs_promtool
def test_the_deploy_prometheus_config_is_valid(tmp_path):
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    prom["rule_files"] = [str(RULES)]  # /etc/prometheus/rules in the container
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(prom))
    out = subprocess.run([PROMTOOL, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]


def test_dashboard_has_the_panels_an_operator_needs():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    text = " ".join(e for _, e in dashboard_queries())
    for metric in ("maskq_queue_backlog_jobs", "maskq_jobs_finished_total", "maskq_job_failures_total",
                   "maskq_job_stage_seconds_bucket", "maskq_inference_batch_size", "maskq_worker_busy_processes",
                   "maskq_http_requests_total", "maskq_http_request_duration_seconds_bucket",
                   "maskq_http_rejections_total", "maskq_jobs_enqueued_total", "maskq_model_info",
                   "maskq_mask_confidence_bucket"):
        assert metric in text, f"no panel shows {metric}"
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.95," in text


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables as Prometheus would see them with 'All' selected."""
    return expr.replace("$__rate_interval", "1m").replace("$queue", ".*")


@needs_prometheus
def test_every_dashboard_query_and_rule_runs_on_a_real_prometheus(prometheus_factory):
    prom = prometheus_factory({}, [RULES])
    bad = []
    for title, expr in dashboard_queries():
        res = prom.query(grafana_to_promql(expr))
        if res.get("status") != "success":
            bad.append((title, expr, res.get("error")))
    assert not bad, bad
    # the rule groups loaded and evaluate without errors
    deadline = time.monotonic() + 20
    while True:
        groups = prom.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("health") == "ok" for r in rules):
            break
        assert time.monotonic() < deadline, [(r["name"], r.get("health"), r.get("lastError")) for r in rules]
        time.sleep(0.5)
    assert {g["name"] for g in groups} == {"maskq.recording", "maskq.alerts"}
    # a deliberately broken query is reported as such (the check above can fail)
    assert prom.query("sum by (queue (maskq_queue_backlog_jobs)")["status"] == "error"
