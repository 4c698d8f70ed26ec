"""The synthetic two-modality world, the multimodal learner, the masked next-token objective and the multimodal
experiment (tasks/multimodal.py, baselines/multimodal_lm.py, icl_meta/sequence_loss.py, experiments/multimodal.py)."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import baselines
import tasks
from experiments import multimodal as mmx
from icl_meta.claims import problems
from icl_meta.claims import records as records_of
from icl_meta.errors import ConfigError, guarded
from icl_meta.sequence_loss import MaskedNextToken
from icl_meta.train import TrainConfig, train
from tasks import multimodal as mm

N = mm.BENCH_N
FS = mm.BENCHMARKS["fs"]


def tokens(episode) -> np.ndarray:
    return np.argmax(np.asarray(episode.x[..., : mm.VOCAB]), -1)


def turns_of(seq: np.ndarray) -> list[list[int]]:
    """The turns of a conversation: token lists starting at each USER."""
    starts = [i for i, t in enumerate(seq) if t == mm.USER] + [len(seq)]
    return [list(seq[a:b]) for a, b in itertools.pairwise(starts)]


def text_oracle(seq: np.ndarray) -> int:
    """Reads a text-twin fs episode: the letter of the demonstration whose description equals the query's."""
    *demos, query = turns_of(seq)
    for demo in demos:
        if demo[1:4] == query[1:4]:
            return int(demo[6])
    raise AssertionError("no demonstration matches the query")


def decode_images(episode, family) -> np.ndarray:
    """The class of every image [B, T] by the nearest noise-free class image (exact for a noiseless world)."""
    w = mm.world(family.world, family.offset_scale)
    combos = np.stack(np.meshgrid(*[np.arange(mm.VALUES)] * 3, indexing="ij"), -1).reshape(-1, 3)
    prototypes = np.asarray(mm.encode(w, jnp.asarray(combos), jnp.zeros((len(combos), mm.NUISANCE))))
    images = np.asarray(episode.x[..., mm.VOCAB :])
    has = np.abs(images).sum(-1) > 0
    out = []
    for b in range(images.shape[0]):
        rows = images[b][has[b]]
        out.append(np.argmin(((rows[:, None] - prototypes[None]) ** 2).sum(-1), 1))
    return np.stack(out)


def image_oracle(episode, family) -> np.ndarray:
    """Reads an image fs episode: the letter of the demonstration whose decoded class equals the query's."""
    classes = decode_images(episode, family)
    seqs = tokens(episode)
    answers = []
    for b, seq in enumerate(seqs):
        letters = [turn[4] for turn in turns_of(seq)[:-1]]  # USER IMG Q ASSIST letter
        match = [i for i, c in enumerate(classes[b][:-1]) if c == classes[b][-1]]
        answers.append(letters[match[0]])
    return np.asarray(answers)


@pytest.fixture(scope="module")
def fs_pair():
    """The fs benchmark in both option orders and as its text twin, noiseless, from one key (paired)."""
    out = {}
    for text in (False, True):
        for reverse in (False, True):
            family = mm.world_family(concepts="benchmark", text=text, reverse_options=reverse, nuisance=0.0, noise=0.0,
                                      **FS)  # fmt: skip
            out[text, reverse] = (family, family.sample(jax.random.key(7), 100, N))
    return out


def test_rendering_next_token_targets_and_answer_positions():
    family = tasks.get("multimodal", mix=(("mc", 1.0), ("qa", 1.0), ("icl_caption", 1.0)), replay=0.25)
    ep = family.sample(jax.random.key(0), 64, family.min_length)
    seq, y = tokens(ep), np.asarray(ep.y)
    np.testing.assert_array_equal(y[:, :-1], seq[:, 1:])  # y is the next token
    query, answer = np.asarray(ep.params["query"]), np.asarray(ep.params["answer"])
    np.testing.assert_array_equal(y[np.arange(64), query], answer)
    mask = np.asarray(ep.params["loss_mask"]) > 0
    assert mask[np.arange(64), query].all()  # the query's answer is trained (demo_loss=True)
    assert (seq[mask] == mm.ASSIST).sum() + np.isin(seq[mask], [mm.VALUE0 + i for i in range(24)]).sum() == mask.sum()
    images = np.abs(np.asarray(ep.x[..., mm.VOCAB :])).sum(-1) > 0
    np.testing.assert_array_equal(images, seq == mm.IMG)  # image features exactly at IMG tokens
    assert set(np.asarray(ep.params["component"]).tolist()) == {3, 4, 5, 6}  # mc, qa, icl_caption, replay
    replayed = np.asarray(ep.params["classes"])[np.asarray(ep.params["component"]) == 6, -1]
    assert (np.stack([replayed // 64, replayed // 8 % 8, replayed % 8]).max(0) >= 4).any()  # over every concept


def test_query_only_loss_marks_one_answer():
    family = tasks.get("multimodal", mix=(("mc", 1.0),), shots_min=2, demo_loss=False, ways=2)
    ep = family.sample(jax.random.key(1), 16, family.min_length)
    mask = np.asarray(ep.params["loss_mask"])
    np.testing.assert_array_equal(mask.sum(1), 1.0)
    np.testing.assert_array_equal(np.argmax(mask, 1), np.asarray(ep.params["query"]))


def test_scripted_oracle_scores_100_and_constant_answer_exactly_50(fs_pair):
    scores, constant = [], []
    for reverse in (False, True):
        _, ep = fs_pair[True, reverse]
        answers = np.asarray(ep.params["answer"])
        oracle = np.asarray([text_oracle(seq) for seq in tokens(ep)])
        scores.append(np.mean(oracle == answers))
        constant.append(np.mean(answers == mm.LETTER0))  # always "A"
    assert scores == [1.0, 1.0]
    assert np.mean(constant) == 0.5  # exactly, after averaging the two option orders
    _, original = fs_pair[True, False]
    _, reversed_ = fs_pair[True, True]
    per_episode = (np.asarray(original.params["answer"]) == mm.LETTER0) + (
        np.asarray(reversed_.params["answer"]) == mm.LETTER0
    )
    np.testing.assert_array_equal(per_episode, 1)  # A is right in exactly one order of every episode


def test_text_twin_carries_the_image_episodes_information(fs_pair):
    for reverse in (False, True):
        image_family, image_ep = fs_pair[False, reverse]
        _, text_ep = fs_pair[True, reverse]
        text_answers = np.asarray([text_oracle(seq) for seq in tokens(text_ep)])
        np.testing.assert_array_equal(image_oracle(image_ep, image_family), text_answers)
        np.testing.assert_array_equal(image_ep.params["answer"], text_ep.params["answer"])
        # the text twin describes each image's object
        decoded = decode_images(image_ep, image_family)
        np.testing.assert_array_equal(decoded, np.asarray(text_ep.params["classes"])[:, -decoded.shape[1] :])


def test_tuning_and_benchmark_concepts_never_overlap():
    seen = {}
    for concepts in ("tuning", "benchmark"):
        mix = (("mc", 1.0), ("qa", 1.0), ("icl_caption", 1.0), ("image_qa", 1.0))
        family = tasks.get("multimodal", mix=mix, concepts=concepts, pseudo_fraction=0.5)
        ep = family.sample(jax.random.key(3), 800, family.min_length)
        assert set(np.asarray(ep.params["component"]).tolist()) == {0, 3, 4, 5}
        c = np.asarray(ep.params["classes"])
        seen[concepts] = set(c[c >= 0].tolist())
    assert not seen["tuning"] & seen["benchmark"]
    values = np.asarray([[c // 64, c // 8 % 8, c % 8] for c in seen["tuning"]])
    assert values.max() < 4  # tuning classes hold tuning values only
    held = np.asarray([[c // 64, c // 8 % 8, c % 8] for c in seen["benchmark"]])
    assert (held.max(1) >= 4).all()  # every benchmark class holds a held-out value


def test_alignment_data_covers_every_value():
    family = tasks.get("multimodal", mix=(("image_qa", 1.0),), concepts="all")
    ep = family.sample(jax.random.key(6), 2000, family.min_length)
    c = np.asarray(ep.params["classes"])[:, -1]
    held_out = np.stack([c // 64, c // 8 % 8, c % 8], 1) >= 4
    np.testing.assert_allclose(held_out.mean(0), 0.5, atol=0.05)  # each attribute half held-out values
    assert abs(held_out.all(1).mean() - 1 / 8) < 0.03  # e.g. the classes of "cars" (all three held out)


def test_benchmark_families_discriminate_by_their_attributes(fs_pair):
    _, ep = fs_pair[False, False]
    classes, fam = np.asarray(ep.params["classes"]), np.asarray(ep.params["family"])
    for f, differ in enumerate(mm.BENCHMARK_FAMILIES.values()):
        demo1, demo2 = classes[fam == f][:, -3], classes[fam == f][:, -2]
        a, b = (
            np.stack([demo1 // 64, demo1 // 8 % 8, demo1 % 8], 1),
            np.stack([demo2 // 64, demo2 // 8 % 8, demo2 % 8], 1),
        )
        np.testing.assert_array_equal(a != b, np.broadcast_to(np.asarray(differ, bool), a.shape))
        assert (a[:, np.asarray(differ, bool)] >= 4).all()


def test_perturbations_are_paired_with_the_original():
    family = mm.world_family(concepts="benchmark", **FS)
    key = jax.random.key(5)
    plain = family.sample(key, 50, N)
    flipped = mm.world_family(concepts="benchmark", flip_answers=True, **FS).sample(key, 50, N)
    shuffled = mm.world_family(concepts="benchmark", shuffle_images=True, **FS).sample(key, 50, N)
    np.testing.assert_array_equal(plain.params["answer"], flipped.params["answer"])
    assert (np.asarray(flipped.params["demo_answer"]) != np.asarray(plain.params["answer"])).all()  # the other letter
    c, s = np.asarray(plain.params["classes"]), np.asarray(shuffled.params["classes"])
    np.testing.assert_array_equal(s[:, -1], c[:, -1])  # the query's object kept
    assert (s[:, -3:-1] != c[:, -3:-1]).mean() > 0.9  # the demonstrations show other objects
    np.testing.assert_array_equal(tokens(shuffled), tokens(plain))  # answers (tokens) unchanged
    seq_plain, seq_flipped = tokens(plain), tokens(flipped)
    letters = (seq_plain >= mm.LETTER0) & (seq_plain < mm.LETTER0 + 2)
    demo_letters = letters.copy()
    demo_letters[np.arange(50), np.asarray(plain.params["query"]) + 1] = False  # the query's own answer: kept
    demo_letters[:, :5] = False  # the options header: kept
    assert (seq_flipped[demo_letters] != seq_plain[demo_letters]).all()  # every demonstration label flipped
    header = np.zeros_like(letters)
    header[:, 1:5] = True
    np.testing.assert_array_equal(seq_flipped[header], seq_plain[header])  # the options are unchanged


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"mix": (("video", 1.0),)}, "mix component must be one of image_qa"),
        ({"mix": (("mc", 0.0),)}, "must sum to > 0"),
        ({"mix": ()}, "at least one component"),
        ({"concepts": "birds"}, "concepts must be one of tuning"),
        ({"replay": 1.0}, "replay must be < 1"),
        ({"ways": 5}, "ways must be an integer in 2..4"),
    ],
)
def test_bad_family_settings_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        tasks.get("multimodal", **fields)


def test_too_short_sequences_are_refused():
    family = tasks.get("multimodal")
    with pytest.raises(ConfigError, match=f"need n >= {family.min_length}"):
        family.sample(jax.random.key(0), 2, family.min_length - 1)


def test_learner_is_causal_and_uses_images():
    lm = baselines.get("multimodal_lm", width=16, depth=2, heads=2)
    family = mm.world_family(concepts="benchmark", **FS)
    ep = family.sample(jax.random.key(2), 4, N)
    params = lm.init(jax.random.key(0), family.spec)
    out = np.asarray(lm.predict(params, ep.x, ep.y))
    assert out.shape == (4, N, mm.VOCAB)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)
    cut = 10
    changed = np.asarray(ep.x).copy()
    changed[:, cut:] = np.roll(changed[:, cut:], 1, axis=0)  # other tokens and images after position `cut`
    out2 = np.asarray(lm.predict(params, changed, ep.y))
    np.testing.assert_allclose(out2[:, :cut], out[:, :cut], rtol=1e-5, atol=1e-6)  # positions before: unchanged
    image_pos = int(np.argmax(tokens(ep)[0] == mm.IMG))
    other = np.asarray(ep.x).copy()
    other[0, image_pos, mm.VOCAB :] += 1.0
    out3 = np.asarray(lm.predict(params, other, ep.y))
    assert np.abs(out3[0, image_pos] - out[0, image_pos]).max() > 1e-4  # the projector reads the image


def test_rotary_scores_depend_on_relative_position_only():
    from icl_meta.transformer import rotate

    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 8)).astype(np.float32)
    seq = np.zeros((12, 8), np.float32)

    def score(i: int, j: int) -> float:
        qs, ks = seq.copy(), seq.copy()
        qs[i], ks[j] = q, k
        return float(np.asarray(rotate(jnp.asarray(qs)))[i] @ np.asarray(rotate(jnp.asarray(ks)))[j])

    assert score(5, 2) == pytest.approx(score(9, 6), rel=1e-5)
    assert score(0, 0) == pytest.approx(float(q @ k), rel=1e-5)  # position 0: no rotation
    assert abs(score(5, 2) - score(5, 4)) > 1e-3


def tiny_run(tmp_path, trainable=None, until=None, resume=False, init=None, steps=6):
    lm = baselines.get("multimodal_lm", width=16, depth=1, heads=2)
    family = tasks.get("multimodal", mix=(("caption", 1.0), ("mc", 1.0)), concepts="all")
    cfg = TrainConfig(steps=steps, batch=4, n=40, lr=1e-2, eval_every=3, eval_tasks=8, scan_steps=3,
                      probe_tasks=None, probe_positions=None)  # fmt: skip
    from icl_meta.runs import RunDir, run_config

    run = RunDir(tmp_path)
    return train(lm, family, cfg, run, run_config("test", lm, family, cfg), resume=resume, progress=False,
                 objective=MaskedNextToken(trainable=trainable), until=until, init_params=init)  # fmt: skip


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A parent stage's parameters: a tiny run of 3 steps."""
    return tiny_run(tmp_path_factory.mktemp("parent"), steps=3).state.params


def test_frozen_groups_stay_exactly_and_training_starts_from_given_params(tmp_path, parent):
    start = parent
    result = tiny_run(tmp_path / "b", trainable=("projector",), init=start)
    for group in ("embed", "network"):
        jax.tree.map(np.testing.assert_array_equal, result.state.params.weights[group], start.weights[group])
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), result.state.params.weights["projector"],
                         start.weights["projector"])  # fmt: skip
    assert max(jax.tree.leaves(moved)) > 0
    metrics = json.loads((tmp_path / "b" / "config.json").read_text())
    assert metrics["objective"] == {"name": "masked_next_token", "trainable": ["projector"]}


def test_unknown_weight_group_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown weight group"):
        tiny_run(tmp_path, trainable=("vision_tower",))


def test_a_resumed_stage_ends_bit_identical(tmp_path, parent):
    start = parent
    whole = tiny_run(tmp_path / "whole", init=start).state.params
    tiny_run(tmp_path / "split", init=start, until=3)
    resumed = tiny_run(tmp_path / "split", init=start, resume=True).state.params
    jax.tree.map(np.testing.assert_array_equal, resumed.weights, whole.weights)


def records_for(values: dict[tuple[str, str], list[float]]):
    """Tidy records with the same accuracy in every family: (model, benchmark) -> one value per seed."""
    return [
        {"model": m, "benchmark": b, "seed": s, "variant": "none", "order": "original", "family": f, "accuracy": v}
        for (m, b), seeds in values.items() for s, v in enumerate(seeds) for f in mmx.FAMILIES
    ]  # fmt: skip


def decided(values: dict[tuple[str, str], list[float]], models: list[str]) -> dict[str, dict]:
    """The claims on fs decided from records of these values, by id (through the JSON, as --from-results reads)."""
    records = records_for(values)
    doc = json.loads(json.dumps({"comparisons": {"fs": mmx.comparisons(records, models, "fs")}}))
    return {r["id"]: r for r in records_of(mmx.Multimodal().claims(doc))}


def test_claims_follow_the_numbers():
    good = {
        ("base", "fs"): [0.50, 0.52, 0.49], ("base", "zs"): [0.90, 0.91, 0.89],
        ("icl", "fs"): [0.80, 0.85, 0.82], ("icl", "zs"): [0.90, 0.90, 0.89],
        ("icl_no_replay", "zs"): [0.70, 0.72, 0.69], ("icl_no_replay", "fs"): [0.8, 0.8, 0.8],
        ("icl_incoherent", "fs"): [0.55, 0.5, 0.52], ("icl_incoherent", "zs"): [0.9, 0.9, 0.9],
        ("icl_mc", "fs"): [0.7, 0.7, 0.75], ("icl_mc", "zs"): [0.9, 0.9, 0.9],
        ("text", "fs_text"): [0.9, 0.95, 0.92],  # the precondition: the text LM learns fs's text twin in context
    }  # fmt: skip
    models = ["base", "icl", "icl_no_replay", "icl_incoherent", "icl_mc", "text"]
    unmeasured = decided({k: v for k, v in good.items() if k[0] != "text"}, models[:-1])
    assert all(c["held"] is None for c in unmeasured.values())  # no text LM evaluated: nothing is tested
    out = decided(good, models)
    families = [f"fs/icl_gains/{f}" for f in mmx.FAMILIES]
    assert set(out) == {
        "fs/base_fails_in_context", "fs/base_zero_shot_strong", *families, "fs/icl_mean_gain",
        "fs/replay_preserves_zero_shot", "fs/no_replay_loses_zero_shot", "fs/coherent_beats_incoherent",
        "fs/full_mix_beats_icl_mc",
    }  # fmt: skip
    assert all(c["held"] is True and problems(c) == [] for c in out.values()), {k: c["held"] for k, c in out.items()}
    gain = np.asarray(good["icl", "fs"]) - np.asarray(good["base", "fs"])  # per seed, the same in every family
    half = stats.t.ppf(0.975, 2) * gain.std(ddof=1) / np.sqrt(3)
    for claim in (out[f] for f in families):
        assert claim["estimate"] == pytest.approx(gain.mean(), abs=1e-4) and claim["n"] == 3
        assert claim["interval"] == pytest.approx([gain.mean() - half, gain.mean() + half], abs=1e-4)
    assert out["fs/icl_mean_gain"]["estimate"] == pytest.approx(0.32, abs=1e-3)
    assert out["fs/icl_mean_gain"]["interval"] is None  # its threshold is on the mean
    zs_change = np.mean(np.asarray(good["icl", "zs"]) - np.asarray(good["base", "zs"]))
    assert out["fs/replay_preserves_zero_shot"]["estimate"] == pytest.approx(zs_change, abs=1e-4)
    bad = dict(good)
    bad["icl", "zs"] = [0.80, 0.82, 0.79]  # replay no longer preserves zero-shot
    bad["base", "fs"] = [0.70, 0.72, 0.69]  # the base model is no longer near chance
    out = decided(bad, models)
    assert out["fs/replay_preserves_zero_shot"]["held"] is False and out["fs/base_fails_in_context"]["held"] is False
    assert out["fs/coherent_beats_incoherent"]["held"] and out["fs/full_mix_beats_icl_mc"]["held"]
    assert out["fs/base_zero_shot_strong"]["held"] and out["fs/no_replay_loses_zero_shot"]["held"]
    bad["icl_incoherent", "fs"] = [0.85, 0.86, 0.83]  # incoherent shots as good as coherent ones
    bad["icl_mc", "fs"] = [0.9, 0.9, 0.9]  # a single-type mix better than the full one
    out = decided(bad, models)
    assert out["fs/coherent_beats_incoherent"]["held"] is False and out["fs/full_mix_beats_icl_mc"]["held"] is False
    bad["base", "zs"] = [0.5, 0.6, 0.55]  # the base model does not answer zero-shot either
    assert decided(bad, models)["fs/base_zero_shot_strong"]["held"] is False


def test_a_failed_precondition_leaves_every_claim_on_its_benchmark_untested():
    values = {
        ("text", "fs_text"): [0.9, 0.95, 0.92], ("icl", "fs_tuning"): [0.7, 0.75, 0.5],  # mean 0.65: holds
        ("base", "fs"): [0.50, 0.52, 0.49], ("base", "zs"): [0.90, 0.91, 0.89],
        ("icl", "fs"): [0.80, 0.85, 0.82], ("icl", "zs"): [0.90, 0.90, 0.89],
    }  # fmt: skip
    models = ["text", "base", "icl"]
    out = decided(values, models)
    pre = out["fs/icl_mean_gain"]["preconditions"]
    assert [p["id"] for p in pre] == ["fs/text_lm_learns_in_context", "fs/icl_tuning_teaches_icl"]
    assert pre[1]["estimate"] == pytest.approx(0.65, abs=1e-4) and pre[1]["interval"] is None  # on the mean
    assert all(c["held"] is True for c in out.values())
    values["icl", "fs_tuning"] = [0.6, 0.55, 0.5]  # ICL tuning did not teach ICL
    out = decided(values, models)
    assert out and all(c["held"] is None and problems(c) == [] for c in out.values())


def test_bad_experiment_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    figures = tmp_path / "figures"
    for argv, message in [
        (["--stages", "text,stage9"], "--stages: unknown stage9; accepted: text"),
        (["--benchmarks", "fs,mme"], "--benchmarks: unknown mme; accepted: fs"),
        (["--stages", "icl"], "stage icl starts from stage base, which has no checkpoint"),
        (["--seeds", "0"], "--seeds must be an integer >= 1"),
    ]:
        code = guarded(lambda argv=argv: mmx.main(["--scale", "smoke", "--out", str(tmp_path / "runs"),
                                                   "--figures", str(figures), *argv]))  # fmt: skip
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not figures.exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_smoke_scale_end_to_end(tmp_path):
    doc = mmx.main(["--scale", "smoke", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path), "--no-progress"])
    assert set(doc["models"]) == set(mmx.SCALES["smoke"].stages)
    for stem in ("gain", "mix", "replay", "premise"):
        assert (tmp_path / f"multimodal_{stem}_smoke.png").exists()
    saved = json.loads((tmp_path / "multimodal_smoke.json").read_text())
    assert {r["family"] for r in saved["records"]} == {*mmx.FAMILIES, "tuning"}  # fs_tuning: one tuning group
    assert all(np.isfinite(r["accuracy"]) and r["episodes"] > 0 for r in saved["records"])
    assert 0 <= saved["eval_share"] < 1 and all(s["steps_per_s"] > 0 for s in saved["stages"])
    # the claims: in the schema, on numbers recomputed from the records, and re-decided alike from the saved JSON
    claims = {c["id"]: c for c in saved["claims"]}
    assert claims and all(problems(c) == [] for c in claims.values())
    for f in mmx.FAMILIES:
        gain = [np.mean([r["accuracy"] for r in saved["records"] if (r["model"], r["benchmark"], r["family"],
                r["variant"]) == (m, "fs", f, "none")]) for m in ("icl", "base")]  # fmt: skip
        assert claims[f"fs/icl_gains/{f}"]["estimate"] == pytest.approx(gain[0] - gain[1], abs=1e-4)
    text = saved["comparisons"]["fs"]["preconditions"]["text_lm_learns_in_context"]["accuracy"]["mean"]
    assert claims["fs/icl_mean_gain"]["preconditions"][0]["estimate"] == text
    again = mmx.main(["--scale", "smoke", "--figures", str(tmp_path), "--from-results"])
    assert again["claims"] == saved["claims"]
    # Again, for one stage and one benchmark: the finished stages are reused, not retrained (no run file changes)
    metrics = {path: path.read_bytes() for path in (tmp_path / "runs").rglob("metrics.jsonl")}
    again = mmx.main(
        ["--scale", "smoke", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "again"), "--no-progress",
         "--stages", "icl", "--benchmarks", "fs"]
    )  # fmt: skip
    assert {path: path.read_bytes() for path in (tmp_path / "runs").rglob("metrics.jsonl")} == metrics
    sets = {r["benchmark"] for r in again["records"]}  # fs and its text twin
    assert "fs" in sets and again["records"] == [
        r for r in doc["records"] if r["model"] == "icl" and r["benchmark"] in sets
    ]
