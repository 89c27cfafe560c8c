"""A shortcut past graphql-core's executor for the history questions dashboards repeat.

A ``temperatureStatistics`` request answered from memory costs about 40 us of
arithmetic, but graphql-core's executor spends several hundred microseconds around it
(variables coerced a second time, resolve info for every field, completion of every
leaf), and a 500-point ``temperatureSeries`` spends milliseconds building and then
serializing one dictionary per bucket. On the IO loop that is what limits requests per
second and, with many clients waiting their turn, the p99.

So a document whose operation is exactly one ``temperatureStatistics`` or
``temperatureSeries`` field, selecting plain fields (aliases allowed; no directives,
fragments, ``__typename`` or arguments below the root field), is answered here: the
arguments are read as graphql-core's own :func:`~tps.compat.graphql_core.field_arguments`
reads them (planned once per document: :class:`~tps.compat.graphql_core.FieldArguments`)
from the variables it coerced, the answer comes from the same function the resolver
calls (:func:`tps.api.graphql.schema.temperature_statistics` / ``temperature_series``),
and the response is built with the scalars' own ``serialize`` (statistics) or the getters
the executor's flat-list completion uses (:data:`tps.api.graphql.schema.FLAT_LISTS`), so
the JSON is byte for byte what the executor writes. ``tests/test_graphql_shortcut.py``
holds both to that, errors included.

Anything else - another shape, an argument the resolver refuses, a value a scalar
cannot serialize - returns ``None`` and the executor answers, with its own error. The
one error produced here is the executor's for a failed store call (the answer is
awaited here, so asking again would query the store twice): the same located error
with ``data: null``.

Recognising a document costs a walk of its operation; the outcome is kept per
operation node (the document cache keeps the nodes). Lives on the IO loop, like the
document cache; requests that run on a heavy-request thread never come here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from inspect import isawaitable
from itertools import repeat
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLField,
    GraphQLFloat,
    GraphQLInt,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    located_error,
)

from tps.api.graphql.results import format_result
from tps.api.graphql.schema import (
    FLAT_LISTS,
    RequestContext,
    temperature_series,
    temperature_statistics,
)
from tps.compat.graphql_core import FieldArguments, NodeMemo
from tps.history.answers import Series, SeriesBucket
from tps.model import Statistics

logger = logging.getLogger(__name__)

Response = list[str]
"""A response as JSON text in pieces (as :mod:`tps.api.graphql.handler` writes it)."""
Getter = Callable[[Any], Any]

STATISTICS = "temperatureStatistics"
SERIES = "temperatureSeries"
MAX_OPERATIONS = 512
"""Operations whose recognition is remembered (the document cache holds 256 documents)."""
MAX_BUCKET_TEXTS = 20_000
"""Series buckets whose JSON text is kept, over every shortcut (a 30-day chart shows 360)."""

BucketTexts = dict[tuple[int, int], tuple["Shortcut", SeriesBucket, str]]
"""(id of the shortcut, id of the bucket) -> (the shortcut, the bucket, its JSON text):
holding both keeps their ids from being reused while the entry lives."""


def _float(value: float | None) -> float | None:
    return None if value is None else GraphQLFloat.serialize(value)


_STATISTICS_FIELDS: dict[str, Getter] = {
    # What graphql-core's completion gives for each field of TemperatureStatistics.
    "min": lambda s: _float(s.min),
    "max": lambda s: _float(s.max),
    "mean": lambda s: _float(s.mean),
    "count": lambda s: GraphQLInt.serialize(s.count),
}
_BUCKET_FIELDS = FLAT_LISTS["TemperatureSeriesBucket"]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(slots=True)
class Shortcut:
    """How to answer one recognised operation (see the module docstring)."""

    node: FieldNode
    definition: GraphQLField
    key: str
    fields: tuple[tuple[str, str], ...]
    """(response key, field name) of the root field's selection, in order."""
    arguments: FieldArguments
    bucket_fields: tuple[tuple[str, Getter], ...] = ()
    """(response key, getter) of a series' ``buckets`` selection."""
    texts: BucketTexts = field(default_factory=dict)
    """Bucket texts, shared by every shortcut of a :class:`Shortcuts` (one bound)."""

    def respond(self, context: RequestContext, variables: dict[str, Any]
                ) -> Response | Awaitable[Response | None] | None:
        """The response as JSON pieces (or an awaitable of them); None when the
        executor must answer instead."""
        try:
            args = self.arguments.read(variables)
            if self.node.name.value == STATISTICS:
                answer: Any = temperature_statistics(context, **args)
            else:
                answer = temperature_series(context, **args)
            if isawaitable(answer):
                return self._later(answer)
            return self._render(answer)
        except Exception:  # noqa: BLE001 - the executor answers again, with its error
            return None

    async def _later(self, pending: Awaitable[Any]) -> Response | None:
        try:
            answer = await pending
        except Exception as exc:  # noqa: BLE001 - reported as the executor reports it
            error = located_error(exc, [self.node], [self.key])
            return [_dumps(format_result(ExecutionResult(None, [error])))]
        try:
            return self._render(answer)
        except Exception:  # noqa: BLE001 - the executor answers again, with its error
            return None

    def _render(self, answer: Statistics | Series) -> Response:
        if isinstance(answer, Statistics):
            value = {key: _STATISTICS_FIELDS[name](answer) for key, name in self.fields}
            return [_dumps({"data": {self.key: value}})]
        assert isinstance(answer, Series)
        parts: list[str] = []
        for key, name in self.fields:
            if name == "interval":
                text = _dumps(GraphQLInt.serialize(answer.interval_ns // 1_000_000_000))
            else:
                text = "[" + ",".join(self._bucket_texts(answer.buckets)) + "]"
            parts.append(_dumps(key) + ":" + text)
        return ['{"data":{' + _dumps(self.key) + ":{" + ",".join(parts) + "}}}"]

    def _bucket_texts(self, buckets: list[SeriesBucket]) -> list[str]:
        """Each bucket's JSON text, as ``json.dumps`` writes the executor's dictionary.

        History answers a whole, closed bucket with the same SeriesBucket object each time
        (:mod:`tps.history.answers`), so its text is kept by that identity. An entry holds
        the bucket (and this shortcut), so no other object has its id while it is kept.
        Looked up with map (in C): a 30-day chart has 360 buckets."""
        texts = self.texts
        keys = list(zip(repeat(id(self)), map(id, buckets)))
        found: list[tuple[Shortcut, SeriesBucket, str] | None] = list(map(texts.get, keys))
        for index in [i for i, known in enumerate(found) if known is None]:
            bucket = buckets[index]
            text = _dumps({name: get(bucket) for name, get in self.bucket_fields})
            if len(texts) >= MAX_BUCKET_TEXTS:
                texts.clear()
            texts[keys[index]] = found[index] = (self, bucket, text)
        return [known[2] for known in found]  # type: ignore[index]


class Shortcuts:
    """Recognised operations, remembered per operation node (IO loop only)."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self._schema = schema
        self._known: NodeMemo[OperationDefinitionNode, Shortcut | None] = NodeMemo(
            MAX_OPERATIONS)
        self._texts: BucketTexts = {}

    def kept_texts(self) -> int:
        """Bucket texts kept over every shortcut (at most :data:`MAX_BUCKET_TEXTS`)."""
        return len(self._texts)

    def find(self, operation: OperationDefinitionNode) -> Shortcut | None:
        """The shortcut for a validated operation, or None when the executor must run it."""
        return self._known.get(operation,
                               lambda op: recognise(self._schema, op, self._texts))


def recognise(schema: GraphQLSchema, operation: OperationDefinitionNode,
              texts: BucketTexts | None = None) -> Shortcut | None:
    """A :class:`Shortcut` when the (validated) operation has the recognised shape;
    ``texts`` is where it keeps bucket texts (shared with other shortcuts)."""
    query = schema.query_type
    if operation.operation != OperationType.QUERY or operation.directives or query is None:
        return None
    if any(d.directives for d in operation.variable_definitions or ()):
        return None
    selections = operation.selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    node = selections[0]
    name = node.name.value
    if name not in (STATISTICS, SERIES) or node.directives or node.selection_set is None:
        return None
    definition = query.fields.get(name)
    if definition is None:
        return None
    allowed = _STATISTICS_FIELDS if name == STATISTICS else {"interval": None, "buckets": None}
    fields = _plain_fields(node, allowed, nested={"buckets"} if name == SERIES else set())
    if fields is None:
        return None
    bucket_fields: tuple[tuple[str, Getter], ...] = ()
    if name == SERIES:
        buckets = [s for s in node.selection_set.selections
                   if isinstance(s, FieldNode) and s.name.value == "buckets"]
        if len(buckets) > 1:
            return None  # merged by the executor: not worth the rules here
        if buckets:
            inner = _plain_fields(buckets[0], _BUCKET_FIELDS, nested=set())
            if inner is None:
                return None
            bucket_fields = tuple((key, _BUCKET_FIELDS[field_name])
                                  for key, field_name in inner)
    return Shortcut(node, definition, _key(node), fields, FieldArguments(definition, node),
                    bucket_fields,
                    texts if texts is not None else {})


def _plain_fields(node: FieldNode, allowed: Any, nested: set[str]
                  ) -> tuple[tuple[str, str], ...] | None:
    """(response key, name) of every selection when all are plain fields named in
    ``allowed`` (those in ``nested`` must have a selection, the others none), with no
    response key twice; else None."""
    assert node.selection_set is not None
    out: list[tuple[str, str]] = []
    for selection in node.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives or selection.arguments:
            return None
        name = selection.name.value
        if name not in allowed or (selection.selection_set is not None) != (name in nested):
            return None
        out.append((_key(selection), name))
    if len({key for key, _ in out}) != len(out):
        return None
    return tuple(out)


def _key(node: FieldNode) -> str:
    return (node.alias or node.name).value
