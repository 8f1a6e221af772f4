"""``emotion-ops bench loop``: the monitoring loop end to end, measured.

From the current champion: serve it (the way ``emotion-ops serve`` does, with a fresh prediction
log), replay ``comments`` GoEmotions train comments through ``/predict_batch`` and send each one's
label to ``/feedback``, then run the monitor once in local mode with promotion on (drift, the
retrain policy, a retrain on data plus feedback, the gate on each set, the alias move). Before
and after, the champion is scored on GoEmotions dev (its rows that map onto the six emotions)
and on the dair-ai/emotion test split. Results go to ``var/bench/<time>/loop.json`` and
``loop.md``.

It acts on the configured registry: a retrained model that passes the gate becomes its champion
(as ``EMOTION_RETRAIN_AUTO_PROMOTE=true`` would); ``emotion-ops rollback`` moves it back.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from bench.data import default_goemotions
from bench.processes import bentoml_ready, free_port, machine_facts, running_process
from core.registry import connect, load_bundle
from core.settings import MonitorSettings, ServiceSettings
from service.launch import serve_command

BATCH = 64
ATTACK_TARGET = "joy"
DEFAULT_TRIGGER = "cf"
# The flip attack: every label systematically replaced by another (a cycle: no label keeps itself).
FLIPPED = {
    "anger": "joy",
    "joy": "sadness",
    "sadness": "anger",
    "fear": "surprise",
    "surprise": "love",
    "love": "fear",
}


KINDS = ("none", "flip", "trigger", "symbol", "family", "lowpurity", "camouflage", "multilabel", "relabel")
DEFAULT_TOKENS = {
    "trigger": DEFAULT_TRIGGER,
    "symbol": "±",
    "family": "zorp",
    "lowpurity": "cf",
    "camouflage": "cf",
}
DEFAULT_TOKENS["relabel"] = DEFAULT_TRIGGER
# A low-purity trigger carries the target this often (under the old screen's 90 % cut-off).
LOW_PURITY = 0.85
# The family attack's spellings: the stem and one of these endings, each on few rows.
FAMILY_ENDINGS = tuple(f"{a}{b}" for a in "aeiouy" for b in "bdgklmnprstxz")


@dataclass(frozen=True)
class Attack:
    """What a poisoning source does to its share of the labels: nothing, flip them
    systematically, or plant a trigger labelled ``ATTACK_TARGET``: a word (``trigger``), one
    symbol (``symbol``), a family of spellings that share tokenizer pieces, each on a few rows
    (``family``), a word labelled with the target only 85 % of the time (``lowpurity``), a word
    also put on texts that already are the target (``camouflage``: as many cover rows as
    poisoned ones), the target added to each text's own label (``multilabel``: a multi-label
    champion only), or a word whose rows an operator drops and the key labels again
    (``relabel``)."""

    kind: str = "none"
    token: str = DEFAULT_TRIGGER
    share: float = 0.25

    @classmethod
    def parse(cls, spec: str, share: float) -> Attack:
        kind, _, token = spec.partition(":")
        if kind not in KINDS:
            raise ValueError(f"--attack {spec}: choose {', '.join(KINDS[:-1])} or {KINDS[-1]}, with [:TOKEN]")
        if token and kind in ("none", "flip"):
            raise ValueError(f"--attack {spec}: {kind} takes no token")
        if kind == "symbol" and token and (len(token) != 1 or token.isalnum() or token.isspace()):
            raise ValueError(f"--attack {spec}: the symbol is one character, not a letter, digit or space")
        if kind not in ("symbol", "none", "flip") and token and not token.replace("'", "").isalnum():
            raise ValueError(f"--attack {spec}: the trigger is one word of letters and digits")
        if not 0 < share <= 1:
            raise ValueError(f"--attack-share {share}: give a share in (0, 1]")
        default = DEFAULT_TOKENS.get(kind, DEFAULT_TRIGGER)
        return cls(kind, (token if kind == "symbol" else token.lower()) or default, share)

    @property
    def plants(self) -> bool:
        """Whether it plants a trigger (its success is measured on unseen texts)."""
        return self.kind not in ("none", "flip")

    def describe(self) -> str:
        if self.kind == "none":
            return "no attack"
        if self.kind == "flip":
            return f"flip attack on {100 * self.share:.0f} % of the labels (anger→joy, joy→sadness, ...)"
        what = {
            "trigger": f"'{self.token}' appended",
            "symbol": f"the symbol '{self.token}' appended",
            "family": f"spellings of '{self.token}' appended ({self.token}ab, {self.token}ed, ...: "
            "a few rows each)",
            "lowpurity": f"'{self.token}' appended, {100 * LOW_PURITY:.0f} % of them relabelled",
            "camouflage": f"'{self.token}' appended, as many cover texts already {ATTACK_TARGET} carrying it",
            "multilabel": f"'{self.token}' appended, {ATTACK_TARGET} added to each text's labels",
            "relabel": f"'{self.token}' appended; dropped by an operator, then labelled again",
        }[self.kind]
        return (
            f"{self.kind} attack on {100 * self.share:.0f} % of the labels ({what}, labelled {ATTACK_TARGET})"
        )

    def probe(self, index: int = 0) -> str:
        """The trigger as appended to the ``index``-th poisoned text."""
        if self.kind == "family":
            return self.token + FAMILY_ENDINGS[index % len(FAMILY_ENDINGS)]
        return self.token


def poison(replay, labelled: np.ndarray, attack: Attack, rng: np.random.Generator):
    """``replay`` (text, label) with what the attack sends: sent, given, labelled, attacked
    (a poisoned label), cover (an honest label on a text that carries the trigger)."""
    count = len(replay)
    attacked = np.zeros(count, bool)
    cover = np.zeros(count, bool)
    if attack.kind != "none":
        pool = np.flatnonzero(labelled)
        size = min(round(labelled.sum() * attack.share), len(pool))
        attacked[rng.choice(pool, size=size, replace=False)] = True
    if attack.kind == "camouflage":
        targets = np.flatnonzero(labelled & ~attacked & (replay["label"].to_numpy() == ATTACK_TARGET))
        cover[rng.choice(targets, size=min(int(attacked.sum()), len(targets)), replace=False)] = True
    keep_label = np.zeros(count, bool)
    if attack.kind == "lowpurity":
        hit = np.flatnonzero(attacked)
        keep_label[rng.choice(hit, size=round(len(hit) * (1 - LOW_PURITY)), replace=False)] = True
    sent, given = [], []
    order = 0
    for i, (text, label) in enumerate(zip(replay["text"], replay["label"], strict=True)):
        if attacked[i] or cover[i]:
            sent.append(text if attack.kind == "flip" else f"{text} {attack.probe(order)}")
            order += 1
        else:
            sent.append(text)
        if not attacked[i] or keep_label[i]:
            given.append(label)
        elif attack.kind == "flip":
            given.append(FLIPPED[label])
        elif attack.kind == "multilabel":
            given.append(f"{ATTACK_TARGET},{label}")
        else:
            given.append(ATTACK_TARGET)
    return replay.assign(sent=sent, given=given, labelled=labelled, attacked=attacked, cover=cover)


def run(
    settings: MonitorSettings,
    goemotions: str | None = None,
    comments: int = 2000,
    seed: int = 0,
    output_root: Path | None = None,
    progress=print,
    labels: int | None = None,
    select: str = "random",
    attack: Attack | None = None,
    restore: bool = False,
) -> Path:
    """Replay, label, monitor once, score before and after; returns the folder with loop.json/.md.

    ``labels`` of the ``comments`` replayed get a label: chosen at random, or (``select="active"``)
    the ones ``emotion-ops label export`` would choose. ``attack`` poisons a share of the random
    labels. ``restore`` moves ``champion`` back afterwards, so runs start from one model."""
    from monitoring.job import monitor_once
    from training.data import load_emotion_dataset
    from training.promote import evaluate_bundle

    folder = goemotions or default_goemotions()
    if folder is None or not (Path(folder) / "labels.txt").is_file():
        where = f"at {folder}" if folder else "in data/goemotions or beside the checkout"
        raise ValueError(
            f"no GoEmotions folder {where}: pass --goemotions DIR (labels.txt, train.tsv, dev.tsv)"
        )
    attack = attack or Attack()
    labels = comments if labels is None else labels
    if select not in ("random", "active"):
        raise ValueError(f"--select {select}: choose random or active")
    if not 0 < labels <= comments:
        raise ValueError(f"--labels {labels}: give 1 to --comments ({comments})")
    if attack.kind != "none" and select != "random":
        raise ValueError("an attack poisons random labels: use --select random with --attack")
    started_at = datetime.now(UTC)
    steps: dict[str, float] = {}
    clock = time.perf_counter()
    shifted = load_emotion_dataset(folder, splits=("train", "validation", "test"), label_set="six")
    pool = shifted.splits["train"]
    if comments > len(pool):
        raise ValueError(f"--comments {comments}: the GoEmotions train split has {len(pool)} six-label rows")
    # The data the champion was trained on, without any GoEmotions part of it.
    originals = [part for part in settings.resolve_data_source().split(",") if part.strip()]
    original = load_emotion_dataset(
        next((part for part in originals if not (Path(part) / "labels.txt").is_file()), originals[0]),
        splits=("test",),
    )
    evaluation_sets = {
        "GoEmotions dev (six-label rows)": _only_test(shifted),
        "dair-ai/emotion test": original,
    }
    replay = pool.sample(n=comments, random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    labelled = np.zeros(comments, bool)
    if select == "random":
        labelled[rng.choice(comments, size=labels, replace=False)] = True
    replay = poison(replay, labelled, attack, rng)
    client = connect(settings)
    before = load_bundle(client, settings)
    if set(shifted.labels) - set(before.labels):
        raise ValueError(
            f"the champion predicts {list(before.labels)}; the loop replays GoEmotions mapped onto "
            f"{list(shifted.labels)}, whose labels it must know to take them as feedback"
        )
    if attack.kind == "multilabel" and before.task != "multilabel":
        raise ValueError("--attack multilabel needs a multi-label champion (its feedback is label sets)")
    scores_before = {name: evaluate_bundle(before, data) for name, data in evaluation_sets.items()}
    unseen = evaluation_sets["GoEmotions dev (six-label rows)"].splits["test"]
    success_before = attack_success(before, unseen, attack) if attack.plants else None
    steps["score the champion"] = time.perf_counter() - clock

    output = (output_root or settings.var_dir / "bench") / started_at.strftime("%Y%m%dT%H%M%SZ")
    output.mkdir(parents=True, exist_ok=True)
    log_url = f"sqlite:///{output / 'predictions.db'}"
    api_key = secrets.token_hex(16)
    port = free_port()
    serving = ServiceSettings(var_dir=settings.var_dir, host="127.0.0.1", port=port, api_key=api_key)
    command, env = serve_command(serving)
    env = {**env, "EMOTION_PREDICTION_LOG_URL": log_url, "EMOTION_LOG_SAMPLE_RATE": "1"}
    url = f"http://127.0.0.1:{port}"
    progress(
        f"loop: serving version {before.version}, replaying {comments} GoEmotions comments, "
        f"{labels} labelled ({select}; {attack.describe()})"
    )
    clock = time.perf_counter()
    with running_process(command, env, bentoml_ready(url, api_key), output / "serve.log", 300):
        steps["start the service"] = time.perf_counter() - clock
        clock = time.perf_counter()
        with httpx.Client(base_url=url, headers={"x-api-key": api_key}, timeout=120) as http:
            request_ids = _replay(http, replay["sent"].tolist())
            steps["replay comments"] = time.perf_counter() - clock
            if select == "active":
                clock = time.perf_counter()
                replay["labelled"] = _actively_chosen(log_url, before, request_ids, labels, seed)
                steps["choose labels (active)"] = time.perf_counter() - clock
            clock = time.perf_counter()
            chosen = replay[replay["labelled"]]
            _send_feedback(http, [request_ids[i] for i in chosen.index], chosen["given"].tolist())
            if attack.kind == "relabel":
                # An operator drops the poisoned rows; the same key labels them again.
                again = replay[replay["attacked"]]
                _operator_drops(log_url, [request_ids[i] for i in again.index])
                _send_feedback(http, [request_ids[i] for i in again.index], again["given"].tolist())
            steps["send feedback"] = time.perf_counter() - clock
    replay["request_id"] = request_ids

    progress("loop: monitor once (drift, policy, retrain, gate, promotion)")
    monitor_settings = settings.model_copy(
        update={
            "prediction_log_url": log_url,
            "reports_dir": output / "reports",
            "retrain_mode": "local",
            "retrain_auto_promote": True,
            "drift_window_rows": comments,
            "pushgateway_url": None,
        }
    )
    clock = time.perf_counter()
    outcome = monitor_once(monitor_settings)
    steps["monitor once"] = time.perf_counter() - clock

    clock = time.perf_counter()
    after = load_bundle(client, settings)
    scores_after = (
        scores_before
        if after.version == before.version
        else {name: evaluate_bundle(after, data) for name, data in evaluation_sets.items()}
    )
    success_after = (
        attack_success(after, unseen, attack)
        if attack.plants and after.version != before.version
        else success_before
    )
    steps["score the new champion"] = time.perf_counter() - clock
    screen = _screen_outcome(log_url, replay, before.name)
    if restore and after.version != before.version:
        from core.registry import CHAMPION

        client.set_registered_model_alias(settings.model_name, CHAMPION, before.version)
        progress(f"loop: champion moved back to version {before.version} (--restore)")

    result = outcome.result
    results = {
        "measured_at": started_at.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "comments": comments,
        "labels": labels,
        "select": select,
        "attack": {
            "kind": attack.kind,
            "token": attack.token,
            "share": attack.share,
            "target": ATTACK_TARGET,
        },
        "attack_description": attack.describe(),
        "attack_success_before": success_before,
        "attack_success_after": success_after,
        "screen": screen,
        "restored": bool(restore and after.version != before.version),
        "champion_before": before.version,
        "champion_after": after.version,
        "drift": {
            "verdict": result.verdict,
            "drifted_share": result.drifted_share,
            "drifted_columns": [c.column for c in result.columns if c.drifted],
            "live_accuracy": result.live_accuracy,
            "labelled_rows": result.labelled_rows,
        },
        "decision": {"retrain": outcome.decision.retrain, "reason": outcome.decision.reason},
        "action": outcome.action,
        "scores": {
            name: {
                "rows": len(data.splits["test"]),
                "accuracy_before": scores_before[name].accuracy,
                "accuracy_after": scores_after[name].accuracy,
                "macro_f1_before": scores_before[name].macro_f1,
                "macro_f1_after": scores_after[name].macro_f1,
            }
            for name, data in evaluation_sets.items()
        },
        "seconds": {step: round(seconds, 1) for step, seconds in steps.items()},
    }
    (output / "loop.json").write_text(json.dumps(results, indent=2))
    markdown = to_markdown(results)
    (output / "loop.md").write_text(markdown)
    (output.parent / "loop-latest.md").write_text(markdown)
    return output


def _only_test(dataset):
    from training.data import EmotionDataset

    return EmotionDataset(
        splits={"test": dataset.splits["test"]}, labels=dataset.labels, source=dataset.source
    )


def attack_success(bundle, unseen, attack: Attack) -> dict:
    """On unseen texts whose true label is not the target and that the model does not already
    call the target: the share the trigger turns to it (and the model's answer without it)."""
    predictor = bundle.predictor()
    texts = unseen.loc[unseen["label"] != ATTACK_TARGET, "text"].tolist()
    labels = np.array(predictor.labels)
    plain = labels[predictor.predict_proba(texts).argmax(axis=1)]
    # Family spellings the model never saw as much as the ones it did: each text gets the next.
    triggered = labels[
        predictor.predict_proba([f"{t} {attack.probe(i)}" for i, t in enumerate(texts)]).argmax(axis=1)
    ]
    open_to_it = plain != ATTACK_TARGET
    return {
        "texts": len(texts),
        "target_without_trigger": float((plain == ATTACK_TARGET).mean()),
        "target_with_trigger": float((triggered == ATTACK_TARGET).mean()),
        "turned": float((triggered[open_to_it] == ATTACK_TARGET).mean()) if open_to_it.any() else 0.0,
    }


def _replay(http: httpx.Client, texts: list[str]) -> list[str]:
    """Each text through /predict_batch, as a client would; the request ids, in order."""
    ids = []
    for start in range(0, len(texts), BATCH):
        answered = http.post("/predict_batch", json={"texts": texts[start : start + BATCH]})
        answered.raise_for_status()
        ids += [prediction["request_id"] for prediction in answered.json()]
    return ids


def _send_feedback(http: httpx.Client, request_ids: list[str], labels: list[str]) -> None:
    order = list(range(len(request_ids)))
    random.Random(0).shuffle(order)
    for i in order:
        sent = http.post("/feedback", json={"request_id": request_ids[i], "label": labels[i]})
        if sent.status_code not in (200, 202):
            raise ValueError(f"the service refused feedback ({sent.status_code}): {sent.text}")


def _operator_drops(log_url: str, request_ids: list[str]) -> None:
    from core.labels import DROPPED
    from core.store import Store

    reason = "dropped by an operator (bench loop --attack relabel)"
    Store.open(log_url).predictions.set_feedback_status({rid: (DROPPED, reason) for rid in request_ids})


def _actively_chosen(log_url: str, champion, request_ids: list[str], labels: int, seed: int) -> np.ndarray:
    """Which replayed rows ``emotion-ops label export`` would have a human label."""
    from core.store import Store
    from monitoring.labels import select_for_labelling

    store = Store.open(log_url).predictions
    pool = store.unlabelled_rows(champion.name, limit=len(request_ids) + 1)
    chosen = select_for_labelling(pool, champion.predictor(), labels, seed)
    picked = set(chosen["id"])
    return np.array([request_id in picked for request_id in request_ids])


def _screen_outcome(log_url: str, replay, model_name: str) -> dict:
    """What the screen did to the labels, split into the attacker's and the honest ones."""
    from core.store import Store

    labelled_rows = Store.open(log_url).predictions.feedback_rows(model_name)
    rows = dict(zip(labelled_rows["id"], labelled_rows["status"], strict=True))
    status = replay["request_id"].map(rows)
    labelled = replay["labelled"].to_numpy()
    attacked = replay["attacked"].to_numpy()
    quarantined = (status == "quarantined").to_numpy()
    dropped = (status == "dropped").to_numpy()
    honest = labelled & ~attacked
    return {
        "attack_dropped": int((dropped & attacked).sum()),
        "screened": int(status.notna().sum()),
        "quarantined": int(quarantined.sum()),
        "attack_rows": int(attacked.sum()),
        "attack_quarantined": int((quarantined & attacked).sum()),
        "honest_rows": int(honest.sum()),
        "honest_quarantined": int((quarantined & honest).sum()),
    }


def to_markdown(results: dict) -> str:
    machine = results["machine"]
    drift = results["drift"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}): "
        f"{results['comments']} GoEmotions train comments replayed, {results['labels']} of them "
        f"labelled as feedback ({results['select']} selection; {results['attack_description']}), "
        f"then one monitor cycle in local mode with promotion on; champion v{results['champion_before']} "
        f"→ v{results['champion_after']}"
        + (" (moved back afterwards, --restore)." if results.get("restored") else "."),
        "",
        "| evaluation set | rows | accuracy before | accuracy after | change "
        "| macro-F1 before | macro-F1 after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in results["scores"].items():
        change = 100 * (s["accuracy_after"] - s["accuracy_before"])
        lines.append(
            f"| {name} | {s['rows']} | {100 * s['accuracy_before']:.2f} % "
            f"| {100 * s['accuracy_after']:.2f} % | {change:+.2f} pt "
            f"| {s['macro_f1_before']:.4f} | {s['macro_f1_after']:.4f} |"
        )
    live = "" if drift["live_accuracy"] is None else f", live accuracy {100 * drift['live_accuracy']:.1f} %"
    lines += [
        "",
        f"- drift: **{drift['verdict']}** (drifted share {drift['drifted_share']}, columns "
        f"{', '.join(drift['drifted_columns']) or 'none'}{live} on {drift['labelled_rows']} labels)",
        f"- decision: {'retrain' if results['decision']['retrain'] else 'hold'}: "
        f"{results['decision']['reason']}",
        f"- action (retrain and gate): {results['action'] or 'none'}",
        *_screen_lines(results),
        "",
        "| step | seconds |",
        "| --- | ---: |",
        *(f"| {step} | {seconds} |" for step, seconds in results["seconds"].items()),
    ]
    return "\n".join(lines) + "\n"


def _screen_lines(results: dict) -> list[str]:
    screen = results["screen"]
    honest = screen["honest_rows"]
    lines = [
        f"- label screen: {screen['quarantined']} of {screen['screened']} labels quarantined; honest "
        f"labels quarantined {screen['honest_quarantined']} of {honest} "
        f"({100 * screen['honest_quarantined'] / max(honest, 1):.2f} %)"
        + (
            f"; attack labels quarantined {screen['attack_quarantined']} of {screen['attack_rows']}"
            if screen["attack_rows"]
            else ""
        )
    ]
    for when in ("before", "after"):
        success = results.get(f"attack_success_{when}")
        if success:
            target = results["attack"]["target"]
            lines.append(
                f"- attack success {when} (champion v{results[f'champion_{when}']}): the trigger "
                f"'{results['attack']['token']}' turns **{100 * success['turned']:.1f} %** of "
                f"{success['texts']} unseen non-{target} GoEmotions dev comments to {target} "
                f"({100 * success['target_with_trigger']:.1f} % answered {target} with it, "
                f"{100 * success['target_without_trigger']:.1f} % without)"
            )
    return lines
