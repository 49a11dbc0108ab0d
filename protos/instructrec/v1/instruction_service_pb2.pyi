from instructrec.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PreferenceSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREFERENCE_SOURCE_UNSPECIFIED: _ClassVar[PreferenceSource]
    PREFERENCE_SOURCE_NONE: _ClassVar[PreferenceSource]
    PREFERENCE_SOURCE_IMPLICIT: _ClassVar[PreferenceSource]
    PREFERENCE_SOURCE_EXPLICIT: _ClassVar[PreferenceSource]
PREFERENCE_SOURCE_UNSPECIFIED: PreferenceSource
PREFERENCE_SOURCE_NONE: PreferenceSource
PREFERENCE_SOURCE_IMPLICIT: PreferenceSource
PREFERENCE_SOURCE_EXPLICIT: PreferenceSource

class ReadQueryRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class ReadQueryResponse(_message.Message):
    __slots__ = ("reading", "model_versions")
    READING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    reading: _common_pb2.RequestReading
    model_versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    def __init__(self, reading: _Optional[_Union[_common_pb2.RequestReading, _Mapping]] = ..., model_versions: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ...) -> None: ...

class GenerateInstructionRequest(_message.Message):
    __slots__ = ("history_item_ids", "query", "candidate_item_ids", "reading")
    HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    reading: _common_pb2.RequestReading
    def __init__(self, history_item_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., reading: _Optional[_Union[_common_pb2.RequestReading, _Mapping]] = ...) -> None: ...

class GenerateInstructionResponse(_message.Message):
    __slots__ = ("instruction", "template_id", "preference_source", "preference_statement", "preference_cached", "model_versions", "query_truncated", "preference_pending")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_STATEMENT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_CACHED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    QUERY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_PENDING_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    template_id: str
    preference_source: PreferenceSource
    preference_statement: str
    preference_cached: bool
    model_versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    query_truncated: bool
    preference_pending: bool
    def __init__(self, instruction: _Optional[str] = ..., template_id: _Optional[str] = ..., preference_source: _Optional[_Union[PreferenceSource, str]] = ..., preference_statement: _Optional[str] = ..., preference_cached: _Optional[bool] = ..., model_versions: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ..., query_truncated: _Optional[bool] = ..., preference_pending: _Optional[bool] = ...) -> None: ...
