"""The OpenAI Chat Completions request, validated strictly and re-serialized canonically.

Models are strict (no type coercion: "1" is not 1) and refuse unknown fields, so what the invoker receives is exactly
what we understood. Unions are tagged by `role` / `type` so an error points at one branch, and the error's location is
turned into the `param` OpenAI's SDKs expect (e.g. `messages[0].content`). Messages name the field and the rule and
never echo the value.
"""

import json
import math
import operator
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from bulwark.errors import InvalidRequest, UnknownParameter
from bulwark.policy import RequestRules


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


# ---- content parts -------------------------------------------------------------------------------------------------


class TextPart(_M):
    type: Literal["text"]
    text: str


class ImageUrl(_M):
    url: Annotated[str, Field(min_length=1, max_length=2_000_000)]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_M):
    type: Literal["image_url"]
    image_url: ImageUrl


class RefusalPart(_M):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


def _str_or_list(v: Any) -> str | None:
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    return None


TextContent = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[TextPart], Tag("list"), Field(min_length=1)],
    Discriminator(_str_or_list, custom_error_type="invalid_type", custom_error_message="must be a string or an array"),
]
UserContent = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[UserPart], Tag("list"), Field(min_length=1)],
    Discriminator(_str_or_list, custom_error_type="invalid_type", custom_error_message="must be a string or an array"),
]
AssistantContent = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[AssistantPart], Tag("list")],
    Discriminator(_str_or_list, custom_error_type="invalid_type", custom_error_message="must be a string or an array"),
]

# ---- messages ------------------------------------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class SystemMessage(_M):
    role: Literal["system"]
    content: TextContent
    name: Name | None = None


class DeveloperMessage(_M):
    role: Literal["developer"]
    content: TextContent
    name: Name | None = None


class UserMessage(_M):
    role: Literal["user"]
    content: UserContent
    name: Name | None = None


class FunctionCall(_M):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    arguments: str


class ToolCall(_M):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_M):
    role: Literal["assistant"]
    content: AssistantContent | None = None
    refusal: str | None = None
    name: Name | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=128)] | None = None


class ToolMessage(_M):
    role: Literal["tool"]
    content: TextContent
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)]


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]

# ---- tools and response format -------------------------------------------------------------------------------------


class FunctionDef(_M):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_M):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_M):
    name: Annotated[str, Field(min_length=1, max_length=64)]


class NamedToolChoice(_M):
    type: Literal["function"]
    function: NamedFunction


def _mode_or_named(v: Any) -> str | None:
    if isinstance(v, str):
        return "mode"
    if isinstance(v, dict | NamedToolChoice):  # the model instance: serialization asks too
        return "named"
    return None


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")] | Annotated[NamedToolChoice, Tag("named")],
    Discriminator(_mode_or_named, custom_error_type="invalid_type", custom_error_message="must be a string or object"),
]


class ResponseFormatText(_M):
    type: Literal["text"]


class ResponseFormatJsonObject(_M):
    type: Literal["json_object"]


class JsonSchemaFormat(_M):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True, defer_build=True)


class ResponseFormatJsonSchema(_M):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


class StreamOptions(_M):
    include_usage: bool | None = None


def _str_or_list_stop(v: Any) -> str | None:
    return _str_or_list(v)


Stop = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[str], Tag("list"), Field(min_length=1, max_length=4)],
    Discriminator(
        _str_or_list_stop, custom_error_type="invalid_type", custom_error_message="must be a string or array"
    ),
]

Number = Annotated[float, Field(allow_inf_nan=False)]


class ChatCompletionRequest(_M):
    """POST /v1/chat/completions body. Unset fields stay unset so the canonical form carries only what was sent."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=16)] | None = None
    stop: Stop | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    logit_bias: Annotated[dict[Annotated[str, Field(pattern=r"^\d{1,10}$")], Annotated[int, Field(ge=-100, le=100)]],
                          Field(max_length=300)] | None = None  # fmt: skip
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    seed: int | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                        Field(max_length=16)] | None = None  # fmt: skip
    store: bool | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    service_tier: Literal["auto", "default", "flex", "priority"] | None = None


# ---- error mapping -------------------------------------------------------------------------------------------------

# Segments pydantic adds to a location for a tagged-union branch; they are not part of the client's field path.
_UNION_FIELDS = frozenset({"messages", "content", "response_format", "tool_choice", "stop"})
_TAGS = frozenset(
    {"system", "developer", "user", "assistant", "tool", "text", "image_url", "refusal", "json_object", "json_schema"}
    | {"str", "list", "mode", "named"}
)


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    prev: int | str | None = None
    for seg in loc:
        is_tag = seg == "[key]" or (
            isinstance(seg, str) and seg in _TAGS and (isinstance(prev, int) or prev in _UNION_FIELDS)
        )
        if not is_tag:
            name = "schema" if seg == "schema_" else seg  # the field's alias is what clients send
            out += f"[{name}]" if isinstance(name, int) else (f".{name}" if out else str(name))
        prev = seg
    return out or "body"


_RULES: dict[str, str] = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be a boolean",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "literal_error": "is not one of the allowed values",
    "union_tag_invalid": "has a type or role that is not supported",
    "union_tag_not_found": "is missing its type or role",
    "string_too_short": "is too short",
    "string_too_long": "is too long",
    "too_short": "has too few items",
    "too_long": "has too many items",
    "string_pattern_mismatch": "has characters that are not allowed",
    "greater_than_equal": "is below the minimum",
    "less_than_equal": "is above the maximum",
    "finite_number": "must be a finite number",
    "invalid_type": "has the wrong type",
}


def _to_bulwark_error(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False, include_input=False, include_context=True)
    for err in errors:
        if err["type"] == "extra_forbidden":
            # The unknown name is the client's own text: `param` names it only when it looks like a parameter name
            # (so an email address or markup sent as a key is never reflected), and the message never repeats it.
            loc = tuple(err["loc"])
            if not (isinstance(loc[-1], str) and _PLAIN_NAME.fullmatch(loc[-1])):
                loc = (*loc[:-1], "<unrecognized>")
            return UnknownParameter(
                "The request contains a parameter this API does not accept (see param).", param=_param(loc)
            )
    # The deepest location is the most specific one for a failed union branch.
    err = max(errors, key=lambda e: len(e["loc"]))
    param = _param(tuple(err["loc"]))
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # ctx names the discriminator as a quoted string, e.g. "'role'"; the tag field is the useful param.
        tag_field = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
        if tag_field in ("role", "type"):
            param = f"{param}.{tag_field}"
    rule = _RULES.get(err["type"], "is not valid")
    return InvalidRequest(f"'{param}' {rule}.", code="invalid_value", param=param)


# ---- texts the model reads -----------------------------------------------------------------------------------------


def _content_texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, TextPart):
                yield part.text
            elif isinstance(part, RefusalPart):
                yield part.refusal


def message_texts(msg: Any) -> Iterator[str]:
    """Every text of one message the model will read (content parts, refusals, tool call arguments)."""
    yield from _content_texts(msg.content)
    if isinstance(msg, AssistantMessage):
        if msg.refusal is not None:  # as map_texts rewrites it: an empty one too
            yield msg.refusal
        for call in msg.tool_calls or ():
            yield call.function.arguments


def iter_texts(req: ChatCompletionRequest) -> Iterator[tuple[str, str]]:
    """(role, text) for every text in the messages, in order."""
    for msg in req.messages:
        for text in message_texts(msg):
            yield msg.role, text


# Texts in one tool's parameter schema that the model reads: descriptions, titles and string enum values. Bounded so a
# schema cannot make the guardrails read (or the validator walk) without limit; over the bound the request is refused.
_SCHEMA_TEXT_KEYS = frozenset({"description", "title"})
MAX_SCHEMA_TEXTS = 256  # per request, over all tools
MAX_SCHEMA_TEXT_CHARS = 4_096  # per text


def _schema_texts(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _SCHEMA_TEXT_KEYS and isinstance(value, str):
                out.append(value)
            elif key == "enum" and isinstance(value, list):
                out.extend(v for v in value if isinstance(v, str))
            else:
                _schema_texts(value, out)
    elif isinstance(node, list):
        for item in node:
            _schema_texts(item, out)


def schema_texts(parameters: dict[str, Any] | None) -> list[str]:
    """The texts of a tool's parameter schema the model reads (descriptions, titles, string enum values), in order."""
    out: list[str] = []
    if parameters:
        _schema_texts(parameters, out)
    return out


def tool_texts(req: ChatCompletionRequest) -> list[str]:
    """The tools' descriptions and parameter schemas' texts: what the model reads before the conversation, and what
    map_texts also rewrites."""
    out: list[str] = []
    for t in req.tools or ():
        if t.function.description is not None:
            out.append(t.function.description)
        out += schema_texts(t.function.parameters)
    return out


def model_texts(req: ChatCompletionRequest) -> list[str]:
    """Every text the model reads, tools first, then the messages in order (contents, refusals, tool-call arguments).

    The one list the built-in detectors (injection, PII) and the Bedrock guardrail all read; map_texts rewrites exactly
    these texts (tests/unit/test_guardrails_apply.py holds the two equal).
    """
    return [*tool_texts(req), *(text for _role, text in iter_texts(req))]


def _map_part(part: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(part, TextPart):
        text = fn(part.text)
        return part if text == part.text else part.model_copy(update={"text": text})
    if isinstance(part, RefusalPart):
        refusal = fn(part.refusal)
        return part if refusal == part.refusal else part.model_copy(update={"refusal": refusal})
    return part


def _map_content(content: Any, fn: Callable[[str], str]) -> Any:
    """`content` with `fn` applied to its texts; the same object when nothing changed."""
    if isinstance(content, str):
        return fn(content)
    if isinstance(content, list):
        out = [_map_part(part, fn) for part in content]
        return content if all(map(operator.is_, out, content)) else out
    return content


def _map_call(call: ToolCall, fn: Callable[[str], str]) -> ToolCall:
    arguments = fn(call.function.arguments)
    if arguments == call.function.arguments:
        return call
    return call.model_copy(update={"function": call.function.model_copy(update={"arguments": arguments})})


def _map_schema(node: Any, fn: Callable[[str], str]) -> Any:
    """`node` with `fn` applied to the texts schema_texts lists; the same object when nothing changed."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _SCHEMA_TEXT_KEYS and isinstance(value, str):
                out[key] = fn(value)
            elif key == "enum" and isinstance(value, list):
                mapped = [fn(v) if isinstance(v, str) else v for v in value]
                out[key] = value if mapped == value else mapped
            else:
                out[key] = _map_schema(value, fn)
        return node if all(out[k] is v for k, v in node.items()) else out
    if isinstance(node, list):
        items = [_map_schema(item, fn) for item in node]
        return node if all(map(operator.is_, items, node)) else items
    return node


def _map_tool(tool: Tool, fn: Callable[[str], str]) -> Tool:
    update: dict[str, Any] = {}
    if tool.function.description is not None:
        description = fn(tool.function.description)
        if description != tool.function.description:
            update["description"] = description
    if tool.function.parameters:
        parameters = _map_schema(tool.function.parameters, fn)
        if parameters is not tool.function.parameters and parameters != tool.function.parameters:
            update["parameters"] = parameters
    if not update:
        return tool
    return tool.model_copy(update={"function": tool.function.model_copy(update=update)})


def _map_message(msg: Any, fn: Callable[[str], str]) -> Any:
    update: dict[str, Any] = {}
    content = _map_content(msg.content, fn)
    if content is not msg.content and content != msg.content:
        update["content"] = content
    if isinstance(msg, AssistantMessage):
        if msg.refusal is not None:
            refusal = fn(msg.refusal)
            if refusal != msg.refusal:
                update["refusal"] = refusal
        if msg.tool_calls:
            calls = [_map_call(c, fn) for c in msg.tool_calls]
            if not all(map(operator.is_, calls, msg.tool_calls)):
                update["tool_calls"] = calls
    return msg.model_copy(update=update) if update else msg


def map_texts(
    req: ChatCompletionRequest, fn: Callable[[str], str], roles: frozenset[str] | None = None
) -> ChatCompletionRequest:
    """A copy with `fn` applied to every message text (optionally only for `roles`) and to tool descriptions.

    Only what `fn` changed is copied (models are frozen, so unchanged parts are shared), and values `fn` returns are
    not validated again: it maps validated strings to strings. The request itself comes back when nothing changed.
    """
    messages = [msg if roles is not None and msg.role not in roles else _map_message(msg, fn) for msg in req.messages]
    update: dict[str, Any] = {}
    if not all(map(operator.is_, messages, req.messages)):
        update["messages"] = messages
    if req.tools and roles is None:
        tools = [_map_tool(t, fn) for t in req.tools]
        if not all(map(operator.is_, tools, req.tools)):
            update["tools"] = tools
    return req.model_copy(update=update) if update else req


# ---- public API ----------------------------------------------------------------------------------------------------


def _check_counts(doc: dict[str, Any], rules: RequestRules) -> None:
    """The counts that bound the validator's work, on the parsed body before the schema runs: the schema costs a few
    microseconds an element, and a 1 MiB body holds 30,000 one-character messages or content parts."""
    messages = doc.get("messages")
    if not isinstance(messages, list):
        return  # the schema says what is wrong
    if len(messages) > rules.max_messages:
        raise InvalidRequest(
            f"'messages' has more than the allowed {rules.max_messages} messages.",
            code="invalid_value",
            param="messages",
        )
    parts = 0
    for msg in messages:
        if isinstance(msg, dict):
            content, calls = msg.get("content"), msg.get("tool_calls")
            parts += len(content) if isinstance(content, list) else int(content is not None)
            parts += len(calls) if isinstance(calls, list) else 0
    if parts > rules.max_content_parts:
        raise InvalidRequest(
            f"'messages' hold more than the allowed {rules.max_content_parts} content parts and tool calls in total.",
            code="invalid_value",
            param="messages",
        )


def _check_rules(req: ChatCompletionRequest, rules: RequestRules) -> None:
    allowed = set(rules.allowed_message_roles)
    total = 0
    for i, msg in enumerate(req.messages):
        if msg.role not in allowed:
            raise InvalidRequest(
                f"'messages[{i}].role': the role '{msg.role}' is not allowed for this caller.",
                code="invalid_value",
                param=f"messages[{i}].role",
            )
        chars = sum(len(t) for t in message_texts(msg))
        if chars > rules.max_message_chars:
            raise InvalidRequest(
                f"'messages[{i}].content' is longer than the allowed {rules.max_message_chars} characters.",
                code="invalid_value",
                param=f"messages[{i}].content",
            )
        total += chars
    if total > rules.max_total_chars:
        raise InvalidRequest(
            f"'messages' hold more than the allowed {rules.max_total_chars} characters in total.",
            code="invalid_value",
            param="messages",
        )
    texts_of_schemas = [text for t in req.tools or () for text in schema_texts(t.function.parameters)]
    if len(texts_of_schemas) > MAX_SCHEMA_TEXTS or any(len(t) > MAX_SCHEMA_TEXT_CHARS for t in texts_of_schemas):
        raise InvalidRequest(
            f"'tools' parameter schemas hold more than the allowed {MAX_SCHEMA_TEXTS} descriptions, titles and enum "
            f"values, or one longer than {MAX_SCHEMA_TEXT_CHARS} characters.",
            code="invalid_value",
            param="tools",
        )
    if total + sum(map(len, tool_texts(req))) > rules.max_total_chars:
        raise InvalidRequest(
            f"'messages' and the tools' descriptions and schemas hold more than the allowed {rules.max_total_chars} "
            "characters in total.",
            code="invalid_value",
            param="tools",
        )
    for field in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, field)
        if value is not None and value > rules.max_tokens:
            raise InvalidRequest(
                f"'{field}' is above the allowed maximum of {rules.max_tokens}.", code="invalid_value", param=field
            )


def validate_chat_request(doc: Any, rules: RequestRules) -> ChatCompletionRequest:
    """Validate a parsed body against the schema and the caller's rules; raises `InvalidRequest` subclasses only."""
    if not isinstance(doc, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_value", param=None)
    _check_counts(doc, rules)
    try:
        req = ChatCompletionRequest.model_validate(doc)
    except ValidationError as exc:
        raise _to_bulwark_error(exc) from None
    _check_rules(req, rules)
    return req


def canonical_json(req: ChatCompletionRequest) -> bytes:
    """The validated request re-serialized: only fields that were sent, no nulls, sorted keys, compact, UTF-8."""
    data = req.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


_PER_MESSAGE_TOKENS = 4
_PER_IMAGE_TOKENS = 1_105  # a high-detail 1024x1024 image on OpenAI's tiling; a ceiling for the common cases


def estimate_prompt_tokens(req: ChatCompletionRequest) -> int:
    """A cheap upper-leaning estimate: one token per 3 UTF-8 bytes (real tokenizers average ~4 for English)."""
    total_bytes = 0
    tokens = 3  # reply priming
    for msg in req.messages:
        tokens += _PER_MESSAGE_TOKENS
        for text in message_texts(msg):
            total_bytes += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if isinstance(msg.content, list):
            tokens += _PER_IMAGE_TOKENS * sum(isinstance(p, ImagePart) for p in msg.content)
    if req.tools:
        total_bytes += sum(len(json.dumps(t.model_dump(mode="json", exclude_none=True))) for t in req.tools)
    if req.response_format is not None:
        total_bytes += len(json.dumps(req.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return tokens + math.ceil(total_bytes / 3)
