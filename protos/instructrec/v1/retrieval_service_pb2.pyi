from instructrec.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveCandidatesRequest(_message.Message):
    __slots__ = ("history_item_ids", "query", "exclude_item_ids", "num_candidates", "candidate_item_ids", "filters")
    HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    num_candidates: int
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    filters: _containers.RepeatedCompositeFieldContainer[_common_pb2.AttributeFilter]
    def __init__(self, history_item_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., num_candidates: _Optional[int] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., filters: _Optional[_Iterable[_Union[_common_pb2.AttributeFilter, _Mapping]]] = ...) -> None: ...

class RetrieveCandidatesResponse(_message.Message):
    __slots__ = ("candidates", "model_versions", "strategy", "understood_intent")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    UNDERSTOOD_INTENT_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    model_versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    strategy: str
    understood_intent: _containers.RepeatedCompositeFieldContainer[_common_pb2.UnderstoodIntent]
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., model_versions: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ..., strategy: _Optional[str] = ..., understood_intent: _Optional[_Iterable[_Union[_common_pb2.UnderstoodIntent, _Mapping]]] = ...) -> None: ...
