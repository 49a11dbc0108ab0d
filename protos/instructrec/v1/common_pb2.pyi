from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValueMatch(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_MATCH_UNSPECIFIED: _ClassVar[ValueMatch]
    VALUE_MATCH_ANY: _ClassVar[ValueMatch]
    VALUE_MATCH_ALL: _ClassVar[ValueMatch]
VALUE_MATCH_UNSPECIFIED: ValueMatch
VALUE_MATCH_ANY: ValueMatch
VALUE_MATCH_ALL: ValueMatch

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "duration_ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    duration_ms: float
    def __init__(self, stage: _Optional[str] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class AttributeFilter(_message.Message):
    __slots__ = ("attribute", "exclude", "value_set", "range")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    VALUE_SET_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    exclude: bool
    value_set: ValueSet
    range: NumericRange
    def __init__(self, attribute: _Optional[str] = ..., exclude: _Optional[bool] = ..., value_set: _Optional[_Union[ValueSet, _Mapping]] = ..., range: _Optional[_Union[NumericRange, _Mapping]] = ...) -> None: ...

class ValueSet(_message.Message):
    __slots__ = ("values", "match")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    match: ValueMatch
    def __init__(self, values: _Optional[_Iterable[str]] = ..., match: _Optional[_Union[ValueMatch, str]] = ...) -> None: ...

class NumericRange(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class UnderstoodIntent(_message.Message):
    __slots__ = ("attribute", "value", "probability")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    value: str
    probability: float
    def __init__(self, attribute: _Optional[str] = ..., value: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ReadConstraint(_message.Message):
    __slots__ = ("filter", "confidence", "text", "hard")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    filter: AttributeFilter
    confidence: float
    text: str
    hard: bool
    def __init__(self, filter: _Optional[_Union[AttributeFilter, _Mapping]] = ..., confidence: _Optional[float] = ..., text: _Optional[str] = ..., hard: _Optional[bool] = ...) -> None: ...

class ReadReference(_message.Message):
    __slots__ = ("mention", "item_id", "title", "confidence", "alternative_item_ids")
    MENTION_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    mention: str
    item_id: str
    title: str
    confidence: float
    alternative_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mention: _Optional[str] = ..., item_id: _Optional[str] = ..., title: _Optional[str] = ..., confidence: _Optional[float] = ..., alternative_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RequestReading(_message.Message):
    __slots__ = ("constraints", "references", "residual_text", "unread_spans", "reader_version", "cached")
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_TEXT_FIELD_NUMBER: _ClassVar[int]
    UNREAD_SPANS_FIELD_NUMBER: _ClassVar[int]
    READER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    constraints: _containers.RepeatedCompositeFieldContainer[ReadConstraint]
    references: _containers.RepeatedCompositeFieldContainer[ReadReference]
    residual_text: str
    unread_spans: _containers.RepeatedScalarFieldContainer[str]
    reader_version: str
    cached: bool
    def __init__(self, constraints: _Optional[_Iterable[_Union[ReadConstraint, _Mapping]]] = ..., references: _Optional[_Iterable[_Union[ReadReference, _Mapping]]] = ..., residual_text: _Optional[str] = ..., unread_spans: _Optional[_Iterable[str]] = ..., reader_version: _Optional[str] = ..., cached: _Optional[bool] = ...) -> None: ...
