import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from instructrec.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RemovalReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REMOVAL_REASON_UNSPECIFIED: _ClassVar[RemovalReason]
    REMOVAL_REASON_FILTER: _ClassVar[RemovalReason]
    REMOVAL_REASON_BLOCKED: _ClassVar[RemovalReason]
    REMOVAL_REASON_DIVERSITY: _ClassVar[RemovalReason]
    REMOVAL_REASON_EXCLUDED: _ClassVar[RemovalReason]
REMOVAL_REASON_UNSPECIFIED: RemovalReason
REMOVAL_REASON_FILTER: RemovalReason
REMOVAL_REASON_BLOCKED: RemovalReason
REMOVAL_REASON_DIVERSITY: RemovalReason
REMOVAL_REASON_EXCLUDED: RemovalReason

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "history_item_ids", "query", "num_items", "exclude_item_ids", "candidate_item_ids", "filters", "diversity", "caller_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    CALLER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    num_items: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    filters: _containers.RepeatedCompositeFieldContainer[_common_pb2.AttributeFilter]
    diversity: DiversityRule
    caller_id: str
    def __init__(self, user_id: _Optional[str] = ..., history_item_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., num_items: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., filters: _Optional[_Iterable[_Union[_common_pb2.AttributeFilter, _Mapping]]] = ..., diversity: _Optional[_Union[DiversityRule, _Mapping]] = ..., caller_id: _Optional[str] = ...) -> None: ...

class DiversityRule(_message.Message):
    __slots__ = ("attribute", "max_items_per_value")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_PER_VALUE_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    max_items_per_value: int
    def __init__(self, attribute: _Optional[str] = ..., max_items_per_value: _Optional[int] = ...) -> None: ...

class AppliedFilter(_message.Message):
    __slots__ = ("filter", "source", "description")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    filter: _common_pb2.AttributeFilter
    source: str
    description: str
    def __init__(self, filter: _Optional[_Union[_common_pb2.AttributeFilter, _Mapping]] = ..., source: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class RemovedItem(_message.Message):
    __slots__ = ("item_id", "reason", "detail")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    reason: RemovalReason
    detail: str
    def __init__(self, item_id: _Optional[str] = ..., reason: _Optional[_Union[RemovalReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "title", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "instruction", "degraded", "model_versions", "degraded_reasons", "unknown_history_item_ids", "stage_timings", "template_id", "query_truncated", "applied_filters", "rules_version", "applied_rules", "removed_items", "fewer_items", "understood_intent", "reading", "relaxed_constraints")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASONS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    STAGE_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_RULES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    FEWER_ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNDERSTOOD_INTENT_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    RELAXED_CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    instruction: str
    degraded: bool
    model_versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    degraded_reasons: _containers.RepeatedScalarFieldContainer[str]
    unknown_history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    stage_timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    template_id: str
    query_truncated: bool
    applied_filters: _containers.RepeatedCompositeFieldContainer[AppliedFilter]
    rules_version: str
    applied_rules: _containers.RepeatedScalarFieldContainer[str]
    removed_items: _containers.RepeatedCompositeFieldContainer[RemovedItem]
    fewer_items: bool
    understood_intent: _containers.RepeatedCompositeFieldContainer[_common_pb2.UnderstoodIntent]
    reading: _common_pb2.RequestReading
    relaxed_constraints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., instruction: _Optional[str] = ..., degraded: _Optional[bool] = ..., model_versions: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ..., degraded_reasons: _Optional[_Iterable[str]] = ..., unknown_history_item_ids: _Optional[_Iterable[str]] = ..., stage_timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., template_id: _Optional[str] = ..., query_truncated: _Optional[bool] = ..., applied_filters: _Optional[_Iterable[_Union[AppliedFilter, _Mapping]]] = ..., rules_version: _Optional[str] = ..., applied_rules: _Optional[_Iterable[str]] = ..., removed_items: _Optional[_Iterable[_Union[RemovedItem, _Mapping]]] = ..., fewer_items: _Optional[bool] = ..., understood_intent: _Optional[_Iterable[_Union[_common_pb2.UnderstoodIntent, _Mapping]]] = ..., reading: _Optional[_Union[_common_pb2.RequestReading, _Mapping]] = ..., relaxed_constraints: _Optional[_Iterable[str]] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("user_id", "item_id", "event_id", "event_time", "event_type", "value")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    event_id: str
    event_time: _timestamp_pb2.Timestamp
    event_type: str
    value: float
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., event_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class RecordInteractionsRequest(_message.Message):
    __slots__ = ("interactions",)
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    interactions: _containers.RepeatedCompositeFieldContainer[Interaction]
    def __init__(self, interactions: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ...) -> None: ...

class RecordInteractionsResponse(_message.Message):
    __slots__ = ("recorded", "duplicates")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    duplicates: int
    def __init__(self, recorded: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...
