"""A synthetic two-modality world of image-text conversations (docs/papers.md section 10.2): the data of the
multimodal ICL analog of "Towards Multimodal In-Context Learning for Vision & Language Models".

World. An object has 3 attributes (color, shape, texture) of 8 values each; value v of attribute a has a fixed latent
e[a, v] in R^4, and each class (a value combination, 512 of them) a fixed small offset. Its "image" is
g([e_color, e_shape, e_texture] + offset, nuisance) + noise in R^32, where g is a fixed random 2-layer tanh MLP (the
frozen "CLIP encoder", never trained) and the nuisance (R^4, "pose") is fresh per image. Its text description is its
three value-name tokens. Everything fixed comes from `world` (a seed); the draws of an episode from its key.

Concepts. Values 0-3 of each attribute are tuning values, 4-7 held out. ICL-tuning episodes (`concepts="tuning"`) use
classes made of tuning values only; the five benchmark families (`concepts` in BENCHMARK_FAMILIES, analogs of CUB,
Dogs, Flowers, Food and Cars) discriminate classes by held-out values of their attributes, so a benchmark class
always holds a held-out value and never appears in tuning. Alignment data (`concepts="all"`) uses every class.

Tokens (VOCAB = 64; ids below): specials, question tokens, 24 value names, letters A-D, 16 pseudo-names re-drawn per
episode. A conversation is `BOS [A n1 B n2 ...] (USER obj Q ASSIST answer)*`: an optional options header, demo turns,
then the query turn; `obj` is IMG (its image vector at that position) or, for the text twin (`text=True`), the
object's three value tokens. Interleaved "web" sequences are `BOS (IMG c s t)*` (an image and its caption).

Episode (`sample(key, batch, n)`, n the sequence length, at least `min_length`):
    x [B, n, VOCAB + IMAGE_DIM]: one-hot token ; image vector (zero except at IMG positions)
    y [B, n] int: the next token (PAD after the end), so a causal LM is a prequential learner of it
    params: loss_mask [B, n] (1 where y is an assistant answer the stage trains on), query [B] (the position
        predicting the query's first answer token), answer [B] (that token), demo_answer [B] (the answer a learner
        copying the demonstrations' label of the query's class gives: the answer, or the flipped one under
        `flip_answers`), last_demo [B] (the last demonstration's first answer token, PAD if none), classes [B, T]
        (class id of each turn's object, -1 where no turn), component [B] (index into BUILDERS), family [B] (index
        into BENCHMARK_FAMILIES of a benchmark episode, -1 for tuning and all).

Components (`mix`, weights; `replay` adds stage B2's single-image QA over every concept as a fraction of all
episodes):
    image_qa     USER obj Q_attr ASSIST value                     (stage B2; zero-shot retention at benchmark concepts)
    caption      USER obj Q_caption ASSIST c s t                  (stage B1 alignment)
    interleaved  BOS (IMG c s t) x 2-5, unrelated objects; with probability `p_rel` all from one group of `ways`
                 classes (burstiness), so the context helps
    mc           options header; demos and query answer the letter of their class; names are value names (one
                 discriminating attribute, Q_attr) or pseudo-names (Q_what) with probability `pseudo_fraction`
    qa           open answers to Q_what: the value of one attribute (task induction: the demos reveal which) or, with
                 probability `pseudo_fraction`, the pseudo-name of the class (in-context remapping)
    icl_caption  demos and query are captioning turns

Benchmarks (`BENCHMARKS`, `benchmark_sets`): the held-out test sets of the multimodal experiment, each a setting of
this family over the five benchmark families (fs: paper B's 2-way 1-shot MC with pseudo-names, its 2/4-shot and
4-way versions, induction, remap, zs; fs_tuning on the tuning concepts), a text twin of each (`NAME_text`), the MC
ones also with the options reversed and fs also with shuffled images or flipped demonstration answers (`VARIANTS`).
`icl_curriculum` is the ICL-tuning curriculum over the family's knobs (shot_limit, mc_focus, fine).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta import families
from icl_meta.contracts import Episode, TaskFamily
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import ConfigError, require, require_bool, require_choice, require_int, require_number
from tasks.base import register

ATTRIBUTES, VALUES, LATENT, NUISANCE, IMAGE_DIM, HIDDEN = 3, 8, 4, 4, 32, 64
TUNING_VALUES, HELD_OUT_VALUES = np.arange(0, 4), np.arange(4, 8)

# Token ids.
PAD, BOS, USER, ASSIST, SEP, IMG = range(6)
Q_ATTR = (6, 7, 8)  # Q_color, Q_shape, Q_texture
Q_WHAT, Q_CAPTION = 9, 10
VALUE0 = 11  # value v of attribute a is VALUE0 + VALUES * a + v (24 tokens)
LETTER0 = VALUE0 + ATTRIBUTES * VALUES  # A..D
PSEUDO0, PSEUDO_NAMES = LETTER0 + 4, 16
VOCAB = 64

COMPONENTS = ("image_qa", "caption", "interleaved", "mc", "qa", "icl_caption")
BUILDERS = (*COMPONENTS, "replay")  # replay: stage B2's single-image QA over every concept (not the family's)
# Benchmark families: which attributes discriminate their classes (at held-out values; the others take any value).
BENCHMARK_FAMILIES = {
    "cub": (1, 0, 0),  # color
    "dogs": (0, 1, 0),  # shape
    "flowers": (0, 0, 1),  # texture
    "food": (1, 1, 0),  # color and shape
    "cars": (1, 1, 1),  # all three: the coarsest
}
CONCEPTS = ("tuning", "all", *BENCHMARK_FAMILIES, "benchmark")  # benchmark: episode b of family b mod 5
TURN_SLOTS = 9  # USER, obj x 3, Q, ASSIST, answer x 3
HEADER_SLOTS = 9  # BOS, (letter, name) x 4


def value_token(attribute: Any, value: Any) -> Any:
    return VALUE0 + VALUES * attribute + value


def class_id(values_3: Any) -> Any:
    """The class of a value combination [..., 3] -> [...] in 0..511."""
    return (values_3[..., 0] * VALUES + values_3[..., 1]) * VALUES + values_3[..., 2]


class World(NamedTuple):
    latents_3VX: np.ndarray  # [3, 8, 4]
    offsets: np.ndarray  # [512, 12], one per class
    w1: np.ndarray  # [16, 64] the encoder g
    b1: np.ndarray
    w2: np.ndarray  # [64, 32]


@functools.cache
def world(seed: int, offset_scale: float) -> World:
    """The fixed parts of the world: value latents, class offsets and the random encoder (from `seed` alone).
    numpy constants: drawn once, and a sampler compiles no PRNG for them."""
    rng = np.random.default_rng(seed)
    fan_in = ATTRIBUTES * LATENT + NUISANCE
    return World(
        rng.standard_normal((ATTRIBUTES, VALUES, LATENT), np.float32),
        offset_scale * rng.standard_normal((VALUES**ATTRIBUTES, ATTRIBUTES * LATENT), np.float32),
        rng.standard_normal((fan_in, HIDDEN), np.float32) / np.float32(np.sqrt(fan_in)),
        np.zeros((HIDDEN,), np.float32),
        rng.standard_normal((HIDDEN, IMAGE_DIM), np.float32) * np.float32(np.sqrt(2.0 / HIDDEN)),
    )


def encode(w: World, values_3: jax.Array, nuisance: jax.Array) -> jax.Array:
    """The noiseless image of an object [..., 3] with nuisance [..., 4] -> [..., 32]."""
    latents_3VX = jnp.asarray(w.latents_3VX)
    z = jnp.concatenate([latents_3VX[a, values_3[..., a]] for a in range(ATTRIBUTES)], -1)
    z = z + jnp.asarray(w.offsets)[class_id(values_3)]
    return jnp.tanh(jnp.concatenate([z, nuisance], -1) @ w.w1 + w.b1) @ w.w2


class Draws:
    """An episode's random numbers, taken in order from one uniform vector (one PRNG call per episode instead of one
    per draw: the sampler then compiles in a fraction of the time; PRNG calls dominate XLA's CPU compile)."""

    def __init__(self, u: jax.Array, family: jax.Array):
        self.u, self.used, self.family = u, 0, family

    def uniform(self, *shape: int) -> jax.Array:
        size = int(np.prod(shape))
        if self.used + size > self.u.shape[-1]:
            raise AssertionError(f"an episode needs more than the {self.u.shape[-1]} uniforms of `draws`")
        out = self.u[self.used : self.used + size].reshape(shape)
        self.used += size
        return out

    def integers(self, low: Any, high: Any, *shape: int) -> jax.Array:
        """Uniform integers in [low, high) (`high` may be traced)."""
        span = high - low
        return low + jnp.minimum(jnp.floor(self.uniform(*shape) * span), span - 1).astype(jnp.int32)


class Turns(NamedTuple):
    """One episode before rendering: a header and T turns, the query in the last slot, demos right-aligned before it."""

    header: jax.Array  # [HEADER_SLOTS] tokens
    header_len: jax.Array  # int
    present: jax.Array  # [T] bool
    values: jax.Array  # [T, 3] the object of each turn
    question: jax.Array  # [T] question token; PAD: a web turn (IMG caption, no USER/Q/ASSIST)
    answer: jax.Array  # [T, 3] answer tokens
    answer_len: jax.Array  # [T] 1 or 3
    demo_answer: jax.Array  # int: the query's answer under the demonstrations' labelling


@register("multimodal")
@dataclasses.dataclass(frozen=True)
class MultimodalConversations(TaskFamily):
    """Image-text conversations of the synthetic world (module docstring); one family for every training stage and
    benchmark, set by its fields."""

    d: int = VOCAB + IMAGE_DIM
    num_classes: int | None = VOCAB
    mix: tuple[tuple[str, float], ...] = (("mc", 1.0),)
    concepts: str = "tuning"
    replay: float = 0.0  # fraction of single-image QA episodes (stage B2 data) added to the mix
    shots_min: int = 0  # demonstrations per episode, uniform in [shots_min, min(shots_max, shot_limit)]
    shots_max: int = 4  # (sets the episode shape)
    shot_limit: float = 99.0  # a curriculum knob, traced (C1: 1)
    ways: int = 2  # classes per episode (MC options)
    ordered: bool = False  # benchmarks: shots_max demos per class, in class order (A's first), shots_min ignored
    coherent: bool = True  # False: every demo comes from an independent episode
    demo_loss: bool = True  # the loss covers every assistant answer (False: the query's only)
    pseudo_fraction: float = 0.5  # MC / QA episodes with pseudo-names
    fine: float = 0.5  # tuning / all: probability that a group differs in one attribute (else in all three)
    mc_focus: float = 0.0  # a curriculum knob: the mix moved this far towards MC only
    p_rel: float = 0.0  # interleaved: fraction of sequences whose objects share one group
    text: bool = False  # the text twin: objects as value tokens instead of images
    reverse_options: bool = False  # ordered episodes: letters in reverse class order (B for the first class)
    shuffle_images: bool = False  # every demonstration shows a random object of the concepts instead, answers kept
    flip_answers: bool = False  # demonstration labels shifted by one class (2-way: A <-> B), the query's truth kept
    world: int = 0
    offset_scale: float = 0.3
    nuisance: float = 0.5
    noise: float = 0.05

    name: ClassVar[str] = "multimodal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mix", tuple((str(c), float(w)) for c, w in self.mix))  # from config.json lists
        super().__post_init__()
        require(self.d == VOCAB + IMAGE_DIM, f"multimodal: d is fixed at {VOCAB + IMAGE_DIM}, got {self.d}")
        require(self.num_classes == VOCAB, f"multimodal: num_classes is fixed at {VOCAB}, got {self.num_classes}")
        require(len(self.mix) > 0, "multimodal: mix needs at least one component")
        for component, weight in self.mix:
            require_choice(component, "multimodal: mix component", COMPONENTS)
            require_number(weight, f"multimodal: weight of {component}", at_least=0)
        require(sum(w for _, w in self.mix) > 0, f"multimodal: the mix weights must sum to > 0, got {self.mix}")
        require_choice(self.concepts, "multimodal: concepts", CONCEPTS)
        require_int(self.shots_min, "multimodal: shots_min", 0)
        require_int(self.shots_max, "multimodal: shots_max", max(self.shots_min, 1 if self.ordered else 0))
        require_int(self.ways, "multimodal: ways", 2, high=4)
        for name in ("replay", "pseudo_fraction", "fine", "mc_focus", "p_rel"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"multimodal: {name} must be in [0, 1], got {value}")
        require(self.replay < 1, f"multimodal: replay must be < 1, got {self.replay}")
        require_number(self.shot_limit, "multimodal: shot_limit", at_least=0)
        for name in ("ordered", "coherent", "demo_loss", "text", "reverse_options", "shuffle_images", "flip_answers"):
            require_bool(getattr(self, name), f"multimodal: {name}")
        require_int(self.world, "multimodal: world", 0)
        for name in ("offset_scale", "nuisance", "noise"):
            require_number(getattr(self, name), f"multimodal: {name}", at_least=0)

    # ----------------------------------------------------------------------------------------------- shapes

    @property
    def turns(self) -> int:
        """T: demonstration slots plus the query (at least 5, the longest interleaved sequence)."""
        demos = self.shots_max * self.ways if self.ordered else self.shots_max
        return max(demos + 1, 5 if self._weight("interleaved") > 0 else 1)

    @property
    def draws(self) -> int:
        """Uniforms per episode: more than any component takes (an object takes 30, the rest of an episode < 64)."""
        return 64 + 32 * self.turns

    @property
    def min_length(self) -> int:
        """The sequence length n every episode fits in (a conservative bound)."""
        captions = any(self._weight(c) > 0 for c in ("caption", "interleaved", "icl_caption"))
        turn = 1 + (3 if self.text else 1) + 2 + (3 if captions else 1)
        return 1 + 2 * self.ways + self.turns * turn

    def _weight(self, component: str) -> float:
        return dict(self.mix).get(component, 0.0)

    # ----------------------------------------------------------------------------------------------- sampling

    def sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        """As every family's; compiled when called eagerly (op by op this sampler takes seconds, compiled
        milliseconds), inlined when traced (inside a training step, or with traced curriculum fields)."""
        if isinstance(key, jax.core.Tracer) or any(isinstance(v, jax.core.Tracer) for v in vars(self).values()):
            return super().sample(key, batch, n)
        require_int(batch, f"{self.name}: batch")
        require_int(n, f"{self.name}: n")
        return _compiled_sample(self, key, batch, n)

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        if n < self.min_length:
            raise ConfigError(f"multimodal: sequences of this family need n >= {self.min_length}, got {n}")
        w = world(self.world, self.offset_scale)
        t = self.turns
        d = self.draws
        sizes = [d + 1, 2 * t * (NUISANCE + IMAGE_DIM), d, 0 if self.coherent else t * d]
        u = jax.random.uniform(key, (batch, sum(sizes)), minval=1e-7)  # one PRNG call for the batch
        if self.concepts == "benchmark":  # episode b is of family b mod 5
            family = jnp.arange(batch) % len(BENCHMARK_FAMILIES)
        else:
            index = list(BENCHMARK_FAMILIES).index(self.concepts) if self.concepts in BENCHMARK_FAMILIES else -1
            family = jnp.full((batch,), index)
        return _stack(jax.vmap(lambda u, f: self._episode(u, f, n, w, sizes))(u, family))

    def _mix_probabilities(self) -> jax.Array:
        weights = jnp.asarray([self._weight(c) for c in BUILDERS])
        mc = jnp.asarray([c == "mc" for c in BUILDERS], jnp.float32)
        weights = weights / weights.sum()
        weights = (1 - self.mc_focus) * weights + self.mc_focus * mc
        single = jnp.asarray([c == "replay" for c in BUILDERS], jnp.float32)
        return (1 - self.replay) * weights + self.replay * single

    def _episode(self, u: jax.Array, family: jax.Array, n: int, w: World, sizes: list[int]) -> dict[str, jax.Array]:
        u, u_images, u_shuffle, u_demos = jnp.split(u, np.cumsum(sizes)[:-1])
        component = jnp.searchsorted(jnp.cumsum(self._mix_probabilities()), u[-1], side="right")
        component = jnp.minimum(component, len(BUILDERS) - 1)
        builders = [lambda u, c=c: getattr(self, f"_{c}")(Draws(u, family)) for c in BUILDERS]
        turns = jax.lax.switch(component, builders, u[:-1])
        if not self.coherent:  # each demo from an independent episode of the same component
            others = jax.vmap(lambda u: jax.lax.switch(component, builders, u))(u_demos.reshape(self.turns, -1))
            i = jnp.arange(self.turns)
            query = i == self.turns - 1  # the query keeps its own turn; demo slot i comes from episode i

            def mixed(own: jax.Array, other: jax.Array) -> jax.Array:
                return jnp.where(query.reshape(-1, *[1] * (own.ndim - 1)), own, other[i, i])

            turns = turns._replace(
                values=mixed(turns.values, others.values),
                question=mixed(turns.question, others.question),
                answer=mixed(turns.answer, others.answer),
                answer_len=mixed(turns.answer_len, others.answer_len),
            )
        # shuffle_images: every demonstration shows a random object of the family's concepts instead (answers kept)
        draws = Draws(u_shuffle, family)
        unrelated = jnp.stack([self._single(draws) for _ in range(self.turns)])
        demo = (jnp.arange(self.turns) < self.turns - 1)[:, None]
        values = jnp.where(self.shuffle_images & demo, unrelated, turns.values)
        u1, u2 = u_images.reshape(2, self.turns, NUISANCE + IMAGE_DIM)
        normal = jnp.sqrt(-2 * jnp.log(u1)) * jnp.cos(2 * jnp.pi * u2)  # Box-Muller
        nuisance, noise = self.nuisance * normal[:, :NUISANCE], self.noise * normal[:, NUISANCE:]
        images = self.sigma * (encode(w, values, nuisance) + noise)
        rendered = _render(turns, values, images, n, text=self.text, demo_loss=self.demo_loss)
        return rendered | {"component": component, "family": family}

    # --- concepts

    def _group(self, draws: Draws, ways: int) -> tuple[jax.Array, jax.Array]:
        """`ways` distinct classes [ways, 3] sharing every value but the discriminating attributes', and the mask of
        those attributes [3]."""
        one, attr = draws.uniform() < self.fine, draws.integers(0, ATTRIBUTES)
        base_draw, perm_draw = draws.uniform(ATTRIBUTES), draws.uniform(ATTRIBUTES, VALUES)
        if self.concepts in BENCHMARK_FAMILIES or self.concepts == "benchmark":
            table = np.asarray(list(BENCHMARK_FAMILIES.values()), bool)
            index = draws.family if self.concepts == "benchmark" else list(BENCHMARK_FAMILIES).index(self.concepts)
            differ = jnp.asarray(table)[index]
            pool, base_pool = HELD_OUT_VALUES, np.arange(VALUES)
        else:
            differ = jnp.where(one, jnp.arange(ATTRIBUTES) == attr, True)
            pool = TUNING_VALUES if self.concepts == "tuning" else np.arange(VALUES)
            base_pool = pool
        base = jnp.asarray(base_pool)[jnp.floor(base_draw * len(base_pool)).astype(jnp.int32)]
        distinct = jnp.asarray(pool)[jnp.argsort(perm_draw[:, : len(pool)], -1)[:, :ways]].T  # [ways, 3]
        return jnp.where(differ[None], distinct, base[None]), differ

    def _demo_classes(self, draws: Draws) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Which of the episode's `ways` classes each turn shows [T], which turns are present [T], and the query's."""
        t = self.turns
        query = draws.integers(0, self.ways)
        if self.ordered:
            demos: Any = self.shots_max * self.ways
            idx = jnp.arange(t) - (t - 1 - demos)  # demo index; negative before the first demo
            cls = jnp.where(idx >= 0, idx % self.ways, 0)
        else:
            high = jnp.minimum(self.shots_max, jnp.floor(self.shot_limit).astype(jnp.int32))
            demos = draws.integers(self.shots_min, jnp.maximum(high, self.shots_min) + 1)
            cls = draws.integers(0, self.ways, t)
        cls = cls.at[t - 1].set(query)
        present = jnp.arange(t) >= t - 1 - demos
        return cls, present, query

    def _letters(self, draws: Draws) -> jax.Array:
        """The letter index of each class [ways]: class order (ordered episodes, or reversed) or a random order."""
        if self.ordered:
            order = jnp.arange(self.ways)
            return jnp.where(self.reverse_options, order[::-1], order)
        return jnp.argsort(draws.uniform(self.ways))

    def _demo_labels(self, labels: jax.Array, cls: jax.Array, query: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Each turn's label token [T] (flipped for the demos under `flip_answers`) and the query's demo answer."""
        shift = jnp.where(self.flip_answers, 1, 0)
        demo = jnp.arange(self.turns) < self.turns - 1
        return labels[jnp.where(demo, (cls + shift) % self.ways, cls)], labels[(query + shift) % self.ways]

    # --- components: key -> Turns

    def _blank(self, present: jax.Array, values: jax.Array) -> Turns:
        t = self.turns
        return Turns(
            header=jnp.full((HEADER_SLOTS,), PAD).at[0].set(BOS), header_len=jnp.asarray(1), present=present,
            values=values, question=jnp.full((t,), PAD), answer=jnp.full((t, 3), PAD),
            answer_len=jnp.ones((t,), jnp.int32), demo_answer=jnp.asarray(PAD),
        )  # fmt: skip

    def _single(self, draws: Draws) -> jax.Array:
        classes, _ = self._group(draws, self.ways)
        return classes[draws.integers(0, self.ways)]

    def _replay(self, draws: Draws) -> Turns:
        everything = copy.copy(self)  # a copy, not `replace`: curriculum fields may be traced
        object.__setattr__(everything, "concepts", "all")
        return everything._image_qa(draws)

    def _image_qa(self, draws: Draws) -> Turns:
        t = self.turns
        values = jnp.broadcast_to(self._single(draws), (t, ATTRIBUTES))
        attr = draws.integers(0, ATTRIBUTES)
        answer = value_token(attr, values[-1, attr])
        turns = self._blank(jnp.arange(t) == t - 1, values)
        return turns._replace(
            question=jnp.full((t,), Q_ATTR[0] + attr), answer=turns.answer.at[:, 0].set(answer), demo_answer=answer
        )

    def _caption(self, draws: Draws) -> Turns:
        t = self.turns
        values = jnp.broadcast_to(self._single(draws), (t, ATTRIBUTES))
        return self._captions(self._blank(jnp.arange(t) == t - 1, values), Q_CAPTION)

    def _captions(self, turns: Turns, question: int) -> Turns:
        caption = value_token(jnp.arange(ATTRIBUTES), turns.values)  # [T, 3]
        t = self.turns
        return turns._replace(
            question=jnp.full((t,), question), answer=caption, answer_len=jnp.full((t,), 3), demo_answer=caption[-1, 0]
        )

    def _interleaved(self, draws: Draws) -> Turns:
        t = self.turns
        count, related = draws.integers(2, 6), draws.uniform() < self.p_rel
        classes, _ = self._group(draws, self.ways)
        grouped = classes[draws.integers(0, self.ways, t)]
        unrelated = jnp.stack([self._single(draws) for _ in range(t)])
        values = jnp.where(related, grouped, unrelated)
        return self._captions(self._blank(jnp.arange(t) >= t - count, values), PAD)

    def _mc(self, draws: Draws) -> Turns:
        classes, differ = self._group(draws, self.ways)
        cls, present, query = self._demo_classes(draws)
        letters = LETTER0 + self._letters(draws)  # [ways] the letter of each class
        attr = jnp.argmax(differ)
        pseudo = (draws.uniform() < self.pseudo_fraction) | (differ.sum() > 1)
        names = jnp.where(
            pseudo,
            PSEUDO0 + jnp.argsort(draws.uniform(PSEUDO_NAMES))[: self.ways],
            value_token(attr, classes[:, attr]),
        )
        order = jnp.argsort(letters)  # the class listed under A, B, ...
        header = jnp.full((HEADER_SLOTS,), PAD).at[0].set(BOS)
        header = (
            header.at[1 : 1 + 2 * self.ways : 2].set(letters[order]).at[2 : 2 + 2 * self.ways : 2].set(names[order])
        )
        labels, demo_answer = self._demo_labels(letters, cls, query)
        turns = self._blank(present, classes[cls])
        return turns._replace(
            header=header, header_len=jnp.asarray(1 + 2 * self.ways),
            question=jnp.full((self.turns,), jnp.where(pseudo, Q_WHAT, Q_ATTR[0] + attr)),
            answer=turns.answer.at[:, 0].set(labels), demo_answer=demo_answer,
        )  # fmt: skip

    def _qa(self, draws: Draws) -> Turns:
        classes, _ = self._group(draws, self.ways)
        cls, present, query = self._demo_classes(draws)
        pseudo = draws.uniform() < self.pseudo_fraction
        names = PSEUDO0 + jnp.argsort(draws.uniform(PSEUDO_NAMES))[: self.ways]
        remap_labels, remap_demo = self._demo_labels(names, cls, query)
        # task induction: independent objects, one asked attribute
        attr = draws.integers(0, ATTRIBUTES)
        objects = jnp.stack([self._single(draws) for _ in range(self.turns)])
        values = jnp.where(pseudo, classes[cls], objects)
        induced = value_token(attr, values[:, attr])
        labels = jnp.where(pseudo, remap_labels, induced)
        turns = self._blank(present, values)
        return turns._replace(
            question=jnp.full((self.turns,), Q_WHAT), answer=turns.answer.at[:, 0].set(labels),
            demo_answer=jnp.where(pseudo, remap_demo, induced[-1]),
        )  # fmt: skip

    def _icl_caption(self, draws: Draws) -> Turns:
        classes, _ = self._group(draws, self.ways)
        cls, present, _ = self._demo_classes(draws)
        return self._captions(self._blank(present, classes[cls]), Q_CAPTION)

    def labels(self, x: jax.Array, params: dict[str, Any]) -> jax.Array:
        """The label rule of a sequence: the next token (the episode's y), read back from the one-hot tokens."""
        tokens = jnp.argmax(x[..., :VOCAB], -1)
        return jnp.concatenate([tokens[..., 1:], jnp.full_like(tokens[..., :1], PAD)], -1)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _compiled_sample(family: MultimodalConversations, key: jax.Array, batch: int, n: int) -> Episode:
    return family._sample(key, batch, n)


def _render(
    turns: Turns, values: jax.Array, images: jax.Array, n: int, *, text: bool, demo_loss: bool
) -> dict[str, jax.Array]:
    """Lay the header and the present turns out as n tokens (images at IMG positions) with their loss mask."""
    t = turns.present.shape[0]
    web = turns.question == PAD
    obj = (
        value_token(jnp.arange(ATTRIBUTES), values) if text else jnp.broadcast_to(jnp.asarray([IMG, PAD, PAD]), (t, 3))
    )
    slots = jnp.concatenate(
        [
            jnp.full((t, 1), USER),
            obj,
            turns.question[:, None],
            jnp.full((t, 1), ASSIST),
            turns.answer,
        ],
        1,
    )  # fmt: skip  [T, 9]
    slot = jnp.arange(TURN_SLOTS)
    valid = (
        ((slot == 0) | (slot == 4) | (slot == 5)) & ~web[:, None]
        | (slot == 1)
        | ((slot == 2) | (slot == 3)) & text
        | (slot >= 6) & (slot - 6 < turns.answer_len[:, None])
    ) & turns.present[:, None]
    is_answer = (slot >= 6)[None] & valid
    trained = is_answer & (demo_loss | (jnp.arange(t) == t - 1))[:, None]
    is_image = (slot == 1)[None] & valid & (not text)
    header_valid = jnp.arange(HEADER_SLOTS) < turns.header_len
    tokens = jnp.concatenate([turns.header, slots.reshape(-1)])
    ok = jnp.concatenate([header_valid, valid.reshape(-1)])
    where = jnp.where(ok, jnp.cumsum(ok) - 1, n)  # invalid slots go past the end and are dropped
    seq = jnp.full((n,), PAD).at[where].set(tokens, mode="drop")
    target = (
        jnp.zeros((n,), bool)
        .at[where]
        .set(jnp.concatenate([jnp.zeros(HEADER_SLOTS, bool), trained.reshape(-1)]), mode="drop")
    )
    image_slot = jnp.concatenate([jnp.zeros(HEADER_SLOTS, bool), is_image.reshape(-1)])
    turn_images = jnp.concatenate([jnp.zeros((HEADER_SLOTS, IMAGE_DIM)), jnp.repeat(images, TURN_SLOTS, 0)])
    pixels = jnp.zeros((n, IMAGE_DIM)).at[jnp.where(image_slot & ok, where, n)].set(turn_images, mode="drop")
    query_answer = where[HEADER_SLOTS + (t - 1) * TURN_SLOTS + 6]
    x = jnp.concatenate([jax.nn.one_hot(seq, VOCAB), pixels], -1)
    y = jnp.concatenate([seq[1:], jnp.full((1,), PAD)])
    demo_turns = turns.present & (jnp.arange(t) < t - 1)
    last_demo = jnp.where(demo_turns.any(), turns.answer[t - 2, 0], PAD)
    return {
        "x": x,
        "y": y,
        "loss_mask": jnp.concatenate([target[1:], jnp.zeros((1,), bool)]).astype(jnp.float32),
        "query": query_answer - 1,
        "answer": seq[query_answer],
        "demo_answer": turns.demo_answer,
        "last_demo": last_demo,
        "classes": jnp.where(turns.present, class_id(values), -1),
    }


def _stack(fields: dict[str, jax.Array]) -> Episode:
    x, y = fields.pop("x"), fields.pop("y")
    return Episode(x, y.astype(jnp.int32), fields)


# --------------------------------------------------------------------------------------------------- benchmarks

BENCH_N = 72  # the sequence length of a benchmark episode (fs_4shot needs 50)
BENCHMARKS: dict[str, dict[str, Any]] = {  # fs: 2-way 1-shot MC with pseudo-names; induction: Q_what; remap: open
    "fs": dict(mix=(("mc", 1.0),), ordered=True, shots_max=1, pseudo_fraction=1.0),
    "fs_2shot": dict(mix=(("mc", 1.0),), ordered=True, shots_max=2, pseudo_fraction=1.0),
    "fs_4shot": dict(mix=(("mc", 1.0),), ordered=True, shots_max=4, pseudo_fraction=1.0),
    "fs_4way": dict(mix=(("mc", 1.0),), ordered=True, shots_max=1, ways=4, pseudo_fraction=1.0),
    "induction": dict(mix=(("qa", 1.0),), shots_min=2, shots_max=2, pseudo_fraction=0.0),
    "remap": dict(mix=(("qa", 1.0),), ordered=True, shots_max=1, pseudo_fraction=1.0),
    "zs": dict(mix=(("image_qa", 1.0),), shots_max=0),
    # not held out: fs on the tuning concepts, the in-distribution check that ICL tuning taught ICL at all
    "fs_tuning": dict(mix=(("mc", 1.0),), ordered=True, shots_max=1, pseudo_fraction=1.0, concepts="tuning"),
}
MC_BENCHMARKS = ("fs", "fs_2shot", "fs_4shot", "fs_4way", "fs_tuning")  # also scored with the options reversed
VARIANTS: dict[str, dict[str, bool]] = {  # fs's perturbations of the demonstrations (the query's truth kept)
    "none": {}, "shuffle_images": {"shuffle_images": True}, "flip_answers": {"flip_answers": True}
}  # fmt: skip


class BenchmarkSet(NamedTuple):
    """One benchmark's episodes on the host, in one option order and variant."""

    benchmark: str  # a name of BENCHMARKS, or NAME_text (its text twin)
    order: str  # original, or reversed (MC_BENCHMARKS: the letters in reverse class order)
    variant: str  # a name of VARIANTS
    x_BLD: np.ndarray
    params: dict[str, np.ndarray]  # the episodes' params (query, answer, demo_answer, last_demo, family, ...)


def world_family(**fields: Any) -> MultimodalConversations:
    """The family with `fields` set (through the registry: an unknown field is a one-line error)."""
    family = families.get("multimodal", **fields)
    assert isinstance(family, MultimodalConversations)
    return family


def icl_curriculum(steps: int) -> Curriculum:
    """C1 for the first half (k <= 1 demonstrations, coarse groups, MC only), then C2 (k <= 4, the full mix with
    fine-grained groups and pseudo-names). The schedule is this suite's choice: paper B does not publish its own."""
    half = max(steps // 2, 1)
    return Curriculum.of(
        shot_limit=Stepwise(1, 4, 3, half), mc_focus=Stepwise(1.0, 0.0, -1.0, half), fine=Stepwise(0.0, 0.5, 0.5, half)
    )


def benchmark_family(name: str) -> MultimodalConversations:
    """The benchmark `name` (`_text`: its text twin) over the five held-out families (episode b: family b mod 5)."""
    base, text = (name[: -len("_text")], True) if name.endswith("_text") else (name, False)
    return world_family(**{"concepts": "benchmark", "text": text, **BENCHMARKS[base]})


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample_variant(family: MultimodalConversations, key: jax.Array, episodes: int, flags_3: jax.Array) -> Episode:
    """One compiled sampler per benchmark for every option order and perturbation (traced flags, paired episodes)."""
    variant = copy.copy(family)
    for name, flag in zip(("reverse_options", "shuffle_images", "flip_answers"), flags_3, strict=True):
        object.__setattr__(variant, name, flag)
    return variant.sample(key, episodes, BENCH_N)


def benchmark_sets(names: Sequence[str], episodes: int, key: jax.Array) -> list[BenchmarkSet]:
    """The benchmarks `names`, `episodes` per held-out family, per option order and (fs) perturbation, from `key` (a
    test stream): every model evaluated on them sees the same episodes."""
    sets = []
    for name in names:
        family = benchmark_family(name)
        # one key per benchmark, whatever else is selected, shared with its text twin (paired episodes)
        benchmark_key = jax.random.fold_in(key, list(BENCHMARKS).index(name.removesuffix("_text")))
        orders = ("original", "reversed") if name.split("_text")[0] in MC_BENCHMARKS else ("original",)
        for order in orders:
            for variant in tuple(VARIANTS) if name == "fs" and order == "original" else ("none",):
                flags = VARIANTS[variant] | {"reverse_options": order == "reversed"}
                flags_3 = jnp.asarray(
                    [flags.get(k, False) for k in ("reverse_options", "shuffle_images", "flip_answers")]
                )
                ep = _sample_variant(family, benchmark_key, len(BENCHMARK_FAMILIES) * episodes, flags_3)
                sets.append(BenchmarkSet(name, order, variant, np.asarray(ep.x), jax.tree.map(np.asarray, ep.params)))
    return sets
