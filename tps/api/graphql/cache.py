"""A bounded cache of parsed and validated GraphQL documents.

Parsing and validating a document costs far more than executing a small query, and
clients send the same few documents over and over. The cache maps the document text
to the outcome of parse + validation (including the errors of an invalid document, so
a hostile client repeating a bad document costs a dictionary lookup too).

Validation is not linear: graphql-core's overlapping-fields rule compares the fields of
one selection set pair by pair, so 2,000 repetitions of one field (12 KB) took 1.4 s.
Two things keep that off the IO loop: a document with more than
``MAX_DOCUMENT_ELEMENTS`` fields, arguments, directives and variables is refused right
after the (linear) parse, and a document not seen before that is longer than
``INLINE_CHARS`` is parsed and validated on a thread of its own (:meth:`get_async`),
which hands the interpreter lock back to the loop every few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DefinitionNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    ObjectFieldNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValuesOfCorrectTypeRule,
    parse,
    specified_rules,
    validate,
)

from tps.api.graphql.results import BAD_REQUEST, BAD_USER_INPUT, document_errors

logger = logging.getLogger(__name__)

MAX_DOCUMENT_CHARS = 100_000
"""Largest accepted document, in characters."""

MAX_DEPTH = 15
"""Deepest accepted selection nesting (GraphiQL's introspection query needs 13)."""

MAX_DOCUMENT_ELEMENTS = 500
"""Most fields, fragment spreads, inline fragments, arguments, directives and variable
definitions in one document (GraphiQL's introspection query has about 100). Bounds
what validating one document can cost (0.1 to 0.4 s at the limit on 2 busy cores)."""

INLINE_CHARS = 256
"""New documents up to this long are validated on the IO loop (well under a
millisecond); longer ones on the validation thread."""


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """Outcome of parse + validation of one document text.

    ``errors`` is empty for a valid document. ``operations`` maps each operation name
    (``None`` for an anonymous one) to its definition; ``labels`` to the metrics label
    (the first root field name, bounded by the schema, never the client's free text).
    Every error carries ``extensions.code`` (:func:`~tps.api.graphql.results.document_errors`).
    """

    document: DocumentNode | None
    errors: tuple[GraphQLError, ...]
    operations: dict[str | None, OperationDefinitionNode]

    def operation(self, name: str | None) -> OperationDefinitionNode | None:
        """The operation to run for ``operationName`` ``name`` (None: the only one)."""
        if name is None:
            if len(self.operations) == 1:
                return next(iter(self.operations.values()))
            return None
        return self.operations.get(name)

    def label(self, name: str | None) -> str:
        """A bounded metrics label: ``<type>.<first root field>``."""
        op = self.operation(name)
        if op is None:
            return "invalid"
        first = next(
            (s for s in op.selection_set.selections if isinstance(s, FieldNode)), None
        )
        return f"{op.operation.value}.{first.name.value if first else '?'}"


class DocumentCache:
    """LRU of :class:`ParsedDocument` keyed by document text, bounded in entries.

    Documents longer than ``max_cached_chars`` are parsed every time and not kept, so
    the cache's memory stays bounded (entries x small documents) whatever clients send.

    Thread-safe (a lock around the dictionary); in practice used from the IO loop.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        max_entries: int = 256,
        max_chars: int = MAX_DOCUMENT_CHARS,
        max_depth: int = MAX_DEPTH,
        max_cached_chars: int = 8_192,
    ) -> None:
        self._schema = schema
        self._max_entries = max_entries
        self.max_chars = max_chars
        self.max_cached_chars = max_cached_chars
        self._rules: list[type[ASTValidationRule]] = [*_RULES, _depth_rule(max_depth)]
        self._entries: OrderedDict[str, ParsedDocument] = OrderedDict()
        self._lock = threading.Lock()
        self._validator: ThreadPoolExecutor | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, text: str) -> ParsedDocument | None:
        """The cached outcome for ``text``, or None when it was not seen (or not kept)."""
        with self._lock:
            entry = self._entries.get(text)
            if entry is not None:
                self._entries.move_to_end(text)
                self.hits += 1
            return entry

    def inline(self, text: str) -> bool:
        """True when a new ``text`` is cheap enough to validate on the calling thread."""
        return len(text) <= INLINE_CHARS

    def get(self, text: str) -> ParsedDocument:
        """The parsed + validated document for ``text`` (from the cache when seen), on
        the calling thread: on the IO loop only when :meth:`inline` says so."""
        entry = self.lookup(text)
        if entry is not None:
            return entry
        return self._keep(text, self.build(text))

    async def get_async(self, text: str) -> ParsedDocument:
        """:meth:`get`, validating a new long document on the validation thread."""
        entry = self.lookup(text)
        if entry is not None:
            return entry
        if self.inline(text):
            return self._keep(text, self.build(text))
        with self._lock:
            if self._validator is None:
                self._validator = ThreadPoolExecutor(1, "tps-graphql-validate")
            validator = self._validator
        built = await asyncio.wrap_future(validator.submit(self.build, text))
        return self._keep(text, built)

    def close(self) -> None:
        """Stop the validation thread (a validation running is abandoned)."""
        with self._lock:
            validator, self._validator = self._validator, None
        if validator is not None:
            validator.shutdown(wait=False, cancel_futures=True)

    def _keep(self, text: str, entry: ParsedDocument) -> ParsedDocument:
        with self._lock:
            self.misses += 1
            if len(text) > self.max_cached_chars:
                # Big documents are rare and their trees large: not worth the memory.
                return entry
            self._entries[text] = entry
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return entry

    def build(self, text: str) -> ParsedDocument:
        """Parse and validate ``text`` without touching the cache."""
        if len(text) > self.max_chars:
            error = GraphQLError(
                f"query: the document has {len(text)} characters, more than the limit "
                f"of {self.max_chars}", extensions={"code": BAD_REQUEST},
            )
            return ParsedDocument(None, (error,), {})
        try:
            document = parse(text, max_tokens=self.max_chars // 2)
        except GraphQLError as error:
            return ParsedDocument(None, document_errors([error]), {})
        elements = count_elements(document.definitions, MAX_DOCUMENT_ELEMENTS)
        if elements > MAX_DOCUMENT_ELEMENTS:
            too_many = GraphQLError(
                f"query: the document has more than {MAX_DOCUMENT_ELEMENTS} fields, "
                "fragments, arguments, directives and variables (the limit)",
                extensions={"code": BAD_REQUEST, "limit": MAX_DOCUMENT_ELEMENTS},
            )
            return ParsedDocument(None, (too_many,), {})
        errors = document_errors(validate(self._schema, document, self._rules))
        operations = {
            (d.name.value if d.name else None): d
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
        }
        return ParsedDocument(document, tuple(errors), operations)


def count_elements(definitions: Sequence[DefinitionNode], stop_after: int) -> int:
    """Fields, fragment spreads, inline fragments, arguments, directives and variable
    definitions in ``definitions`` (each fragment counted once, where it is defined);
    counting stops once past ``stop_after``. Linear, and iterative (no recursion)."""
    count = 0
    pending: list[Any] = list(definitions)
    while pending and count <= stop_after:
        node = pending.pop()
        count += len(getattr(node, "variable_definitions", None) or ())
        count += len(getattr(node, "directives", None) or ())
        count += len(getattr(node, "arguments", None) or ())
        if not isinstance(node, DefinitionNode):
            count += 1  # a selection
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            pending.extend(selection_set.selections)
    return count


class ArgumentValuesRule(ValuesOfCorrectTypeRule):
    """graphql-core's check of literal values, naming the argument (or input field) at
    fault: one ``BAD_USER_INPUT`` error per wrong value, with ``argumentName``.

    It replaces the standard rule rather than adding to it, so a bad ``DateTime`` gives
    one error, not two.
    """

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self._names: list[str] = []

    def enter_argument(self, node: ArgumentNode, *_args: object) -> None:
        self._names.append(node.name.value)

    def leave_argument(self, node: ArgumentNode, *_args: object) -> None:
        self._names.pop()

    def enter_object_field(self, node: ObjectFieldNode, *args: Any) -> None:
        self._names.append(node.name.value)
        super().enter_object_field(node, *args)

    def leave_object_field(self, node: ObjectFieldNode, *_args: object) -> None:
        self._names.pop()

    def report_error(self, error: GraphQLError) -> None:
        """Prefix the argument's name and say it is the user's input."""
        if self._names:
            name = self._names[-1]
            error = GraphQLError(f"{name}: {error.message}", error.nodes,
                                 original_error=error.original_error,
                                 extensions={"code": BAD_USER_INPUT, "argumentName": name})
        super().report_error(error)


_RULES: tuple[type[ASTValidationRule], ...] = tuple(
    ArgumentValuesRule if rule is ValuesOfCorrectTypeRule else rule for rule in specified_rules
)


def _depth_rule(max_depth: int) -> type[ASTValidationRule]:
    """A validation rule refusing operations nested deeper than ``max_depth``."""

    class QueryDepthRule(ASTValidationRule):
        """Refuses documents whose selections nest deeper than the limit."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._fragments = {
                d.name.value: d
                for d in context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            self._memo: dict[str, int] = {}

        def enter_operation_definition(
            self, node: OperationDefinitionNode, *_args: object
        ) -> None:
            depth = self._depth(node.selection_set, ())
            if depth > max_depth:
                name = node.name.value if node.name else "anonymous operation"
                self.report_error(
                    GraphQLError(
                        f"query depth: {name} nests {depth} levels, more than the limit "
                        f"of {max_depth}",
                        node,
                    )
                )

        def _depth(self, selection_set: SelectionSetNode | None, seen: Sequence[str]) -> int:
            """Nesting below ``selection_set``; fragment depths are memoised so that
            repeated spreads cost nothing (no exponential blow-up)."""
            if selection_set is None:
                return 0
            deepest = 0
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    inner = 1 + self._depth(selection.selection_set, seen)
                elif isinstance(selection, InlineFragmentNode):
                    inner = self._depth(selection.selection_set, seen)
                elif isinstance(selection, FragmentSpreadNode):
                    inner = self._fragment_depth(selection.name.value, seen)
                else:
                    continue
                deepest = max(deepest, inner)
                if deepest > max_depth:
                    break
            return deepest

        def _fragment_depth(self, name: str, seen: Sequence[str]) -> int:
            known = self._memo.get(name)
            if known is not None:
                return known
            fragment = self._fragments.get(name)
            # Cycles are reported by the standard NoFragmentCycles rule.
            if fragment is None or name in seen:
                return 0
            depth = self._depth(fragment.selection_set, (*seen, name))
            self._memo[name] = depth
            return depth

    return QueryDepthRule
