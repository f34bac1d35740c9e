"""Wire faults, on a service's link through the wire proxy, in a timeline and as `chaos` verbs:

- `partition db|cache [--for D]`: both directions blackholed (connections stay open and carry
  nothing: half-open); a trial times it as an outage;
- `wire db|cache` with one toxic of `chaos.wire.toxics` and its attributes, written
  `--latency 200ms --jitter 50ms` (each toxic's `--KIND` and attribute options are generated
  from its declaration), `-t latency -a latency=200ms -a jitter=50ms`, or in a timeline
  `wire db latency=200ms jitter=50ms`, `wire cache blackhole --stream upstream`;
  `[--stream S] [--for D]` for any of them;
- `heal db|cache`: the link's wire faults removed (in a trial: its last partition, kill or stop
  undone);
- `fault db|cache` (timelines only): what `[stack] fault` says, partition, kill or stop, so they
  can be swept side by side.

`target` names the link in front of the user's own service: the proxy `chaos proxy` runs, or the
one an experiment with a `[target]` section puts in front of its upstream (`wire`, `partition` and
`heal` act on it alike).

A fault given `--for D` is handed to the proxy with that deadline, so it expires even if the
controller is killed; the target holds it that long (the command line in the foreground, where
Ctrl-C or SIGTERM removes it at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from chaos.engine.actions.base import (
    Action,
    Arg,
    Target,
    brought_back,
    positive_duration,
    service_name,
)
from chaos.engine.registry import ACTIONS
from chaos.wire.admin import WireClient, new_fault
from chaos.wire.proxy import ALL_LINKS, LINK_NAMES, STREAMS, TARGET_LINK
from chaos.wire.toxics import TOXICS
from herdlab.auth import AdminError
from herdlab.config import DURATION
from protos import wire_pb2

if TYPE_CHECKING:
    from chaos.engine.model import Experiment
    from chaos.engine.trial import Trial

LINK = click.Choice(ALL_LINKS)
LAB_LINK = click.Choice(LINK_NAMES)


def _needs_proxy(experiment: Experiment, service: str, partition: bool) -> str | None:
    if experiment.target is not None or service == TARGET_LINK:
        if experiment.target is None:
            return "the target link is a [target] file's (its proxy in front of the upstream)"
        return None if service == TARGET_LINK else f"a [target] file's proxy has no {service} link"
    proxied = {
        name
        for variant in experiment.combinations() or [{}]
        for name in experiment.wire_for(variant).proxied()
    }
    needed = partition or any(
        experiment.wire_for(v).fault == "partition" for v in experiment.combinations() or [{}]
    )
    if needed and service not in proxied:
        return f'partitioning {service} needs [stack] proxy = "{service}"'
    return None


async def put(target: Target, fault: wire_pb2.Fault) -> dict[str, Any]:
    """Adds `fault` through the target's proxy and, with a time, holds it that long; returns
    its name and when it expires."""
    async with WireClient(target.wire_admin(fault.link)) as client:
        added = await client.add(fault)
        if fault.for_ms > 0 and not fault.once:

            async def remove() -> None:
                with contextlib.suppress(AdminError):  # NOT_FOUND: it has just expired
                    await client.remove(added.name)

            await target.hold(fault.for_ms / 1000, remove)
    done: dict[str, Any] = {"name": added.name}
    if added.expires_at_unix:
        done["expires_at"] = added.expires_at_unix
    return done


def described(fault: wire_pb2.Fault) -> dict[str, Any]:
    details: dict[str, Any] = {"fault": fault.kind, "stream": fault.stream or "both"}
    details.update({k: round(v, 3) for k, v in fault.attributes.items()})
    if fault.for_ms:
        details["for_s"] = fault.for_ms / 1000
    return details


@dataclass(frozen=True)
class Word:
    """One toxic attribute as people write it: `--latency 200ms`, `-a jitter=50ms`."""

    kind: str
    field: str | None  # None: the toxic's switch (`--blackhole`)
    word: str
    type: click.ParamType  # type: ignore[type-arg]
    help: str

    def value(self, given: Any) -> float:
        """The attribute's value for what was given (a duration in seconds: ms)."""
        return float(given) * (1000 if self.field and self.field.endswith("_ms") else 1)


def _words() -> tuple[Word, ...]:
    """Each toxic's words: `--KIND` (its `option` attribute, or a switch), then one per other
    attribute, named without its `_ms`."""
    found = []
    for kind in TOXICS.names():
        toxic = TOXICS.get(kind)
        for f in [None, *dataclasses.fields(toxic)]:
            if f is not None and f.name == toxic.option:
                continue
            field = toxic.option if f is None else f.name
            spec = next((x for x in dataclasses.fields(toxic) if x.name == field), None)
            if spec is None:
                kind_type: click.ParamType = click.BOOL  # type: ignore[type-arg]
            elif field is not None and field.endswith("_ms"):
                kind_type = DURATION
            elif spec.metadata["whole"]:
                kind_type = click.IntRange(int(spec.metadata["lo"]), int(spec.metadata["hi"]))
            else:
                kind_type = click.FloatRange(spec.metadata["lo"], spec.metadata["hi"])
            word = kind if f is None else f.name.removesuffix("_ms")
            meaning = "" if f is None else str(f.metadata["help"])
            if kind_type is DURATION:
                meaning = meaning.removesuffix(", ms.") + "."
            help = toxic.summary if f is None else f"With --{kind}: {meaning}"
            found.append(Word(kind, field, word, kind_type, help))
    return tuple(found)


WORDS = {w.word: w for w in _words()}


def _flag(word: str) -> str:
    """A word's command-line option: `max_wait` is `--max-wait` (`-a max_wait=...` and
    timelines keep the word)."""
    return "--" + word.replace("_", "-")


class _KeyValue(click.ParamType):  # type: ignore[type-arg]
    name = "KEY=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str | None]:
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        return key, raw if sep else None


def _given(value: Any) -> bool:
    return value is not None and value is not False


def _kind_of(values: Mapping[str, Any]) -> str:
    """The one toxic asked for; ValueError otherwise."""
    kinds = {values["toxic"]} if values.get("toxic") else set()
    kinds |= {w.kind for w in WORDS.values() if w.word == w.kind and _given(values.get(w.word))}
    kinds |= {k for k, _ in values.get("attribute", ()) if k in TOXICS.names()}
    if len(kinds) != 1:
        switches = ", ".join(f"--{k}" for k in TOXICS.names())
        raise ValueError(f"give exactly one of {switches} (or -t KIND)")
    return str(kinds.pop())


def _attributes(kind: str, values: Mapping[str, Any]) -> dict[str, float]:
    attributes = {}
    for word in WORDS.values():
        given = values.get(word.word)
        if not _given(given):
            continue
        if word.kind != kind:
            raise ValueError(f"{_flag(word.word)} goes with --{word.kind}")
        if word.field is not None:
            attributes[word.field] = word.value(given)
    for key, raw in values.get("attribute", ()):
        named = WORDS.get(key)
        if named is None or named.kind != kind or (named.field is None) != (raw is None):
            known = [w.word for w in WORDS.values() if w.kind == kind and w.field]
            raise ValueError(f"{kind} takes no -a {key}; it takes: {', '.join(known) or 'none'}")
        if named.field is not None:
            try:
                attributes[named.field] = named.value(named.type.convert(raw, None, None))
            except click.BadParameter as exc:
                raise ValueError(f"{key}: {exc.message}") from None
    toxic = TOXICS.get(kind)
    return toxic.parse(attributes).attributes()


@dataclass(frozen=True)
class Wire(Action):
    service: str
    fault: wire_pb2.Fault
    usage = "wire db|cache|target KIND|KEY=VALUE... [--stream S] [--for D]"
    summary = (
        "Put one fault on a service's proxy link: "
        + ", ".join(TOXICS.names())
        + ". --reset without --for resets the connections open now, once; with --for, new "
        "connections are reset too until it ends. Needs 'chaos up --proxy'."
    )
    needs = "wire"
    args = (
        Arg("service", LINK),
        Arg(
            "attribute",
            _KeyValue(),
            "One attribute of the toxic -t names, KEY=VALUE (a switch: KEY).",
            "--attribute",
            short="-a",
            required=False,
            many=True,
        ),
        Arg(
            "toxic",
            click.Choice(TOXICS.names()),
            "The toxic, its attributes given with -a.",
            "--toxic",
            short="-t",
            required=False,
        ),
        *(
            Arg(w.word, w.type, w.help, _flag(w.word), required=False, flag=w.field is None)
            for w in WORDS.values()
        ),
        Arg(
            "stream",
            click.Choice(STREAMS),
            "Which direction: upstream (client to service), downstream, or both.",
            "--stream",
            required=False,
            default="both",
            show_default=True,
        ),
        Arg(
            "for_s",
            DURATION,
            "Remove it after this long.",
            "--for",
            required=False,
            check=positive_duration,
        ),
    )

    @classmethod
    def build(cls, values: Mapping[str, Any]) -> Action:
        cls.check(values)
        kind = _kind_of(values)
        service = values["service"]
        attributes = _attributes(kind, values)
        return cls(
            service,
            new_fault(service, kind, attributes, stream=values["stream"], for_s=values["for_s"]),
        )

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        return _needs_proxy(experiment, self.service, partition=True)

    def described(self) -> dict[str, Any]:
        return described(self.fault)

    async def run(self, target: Target) -> dict[str, Any]:
        return await put(target, self.fault)


@dataclass(frozen=True)
class Partition(Action):
    service: str
    for_s: float | None
    usage = "partition db|cache|target [--for D]"
    summary = (
        "Partition a service on the wire: its connections stay open and carry nothing, both "
        "ways (no reset: clients notice only by keepalive or deadline). Needs 'chaos up --proxy'."
    )
    needs = "wire"
    args = (
        Arg("service", LINK),
        Arg(
            "for_s",
            DURATION,
            "Heal after this long.",
            "--for",
            required=False,
            check=positive_duration,
        ),
    )

    def fault(self) -> wire_pb2.Fault:
        return wire_pb2.Fault(
            name=f"{self.service}-partition",
            link=self.service,
            kind="blackhole",
            stream="both",
            for_ms=(self.for_s or 0.0) * 1000,
        )

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if self.service in down:
            return f"{self.service} is already down at that point"
        down.add(self.service)
        return _needs_proxy(experiment, self.service, partition=True)

    def said(self) -> str:
        return f"{service_name(self.service)} partitioned"

    def described(self) -> dict[str, Any]:
        return described(self.fault())

    async def run(self, target: Target) -> dict[str, Any]:
        target.cut(self.service)
        return await put(target, self.fault())


@dataclass(frozen=True)
class Fault(Action):
    service: str
    usage = "fault db|cache"
    args = (Arg("service", LAB_LINK),)

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        if self.service in down:
            return f"{self.service} is already down at that point"
        down.add(self.service)
        return _needs_proxy(experiment, self.service, partition=False)

    async def run(self, trial: Trial) -> dict[str, Any]:
        done: dict[str, Any] = {"fault": trial.wire.fault}
        if trial.wire.fault == "kill":
            await trial.kill(self.service)
        elif trial.wire.fault == "stop":
            done |= await trial.stop(self.service)
        else:
            await Partition(self.service, None).run(trial)
        return done


@dataclass(frozen=True)
class Heal(Action):
    service: str
    usage = "heal db|cache|target"
    summary = "Remove every wire fault on a service's proxy link."
    needs = "wire"
    args = (Arg("service", LINK),)

    def problem(self, experiment: Experiment, down: set[str]) -> str | None:
        return brought_back("heal", self.service, down, "partitions, kills or stops")

    def said(self) -> str:
        return f"{service_name(self.service)} healed"

    async def run(self, target: Target) -> dict[str, Any]:
        return await target.heal(self.service)


ACTIONS.register("wire", Wire)
ACTIONS.register("partition", Partition)
ACTIONS.register("fault", Fault)
ACTIONS.register("heal", Heal)
