from instructrec.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankCandidatesRequest(_message.Message):
    __slots__ = ("instruction", "candidate_item_ids", "retrieval_scores")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORES_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    retrieval_scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, instruction: _Optional[str] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., retrieval_scores: _Optional[_Iterable[float]] = ...) -> None: ...

class RankCandidatesResponse(_message.Message):
    __slots__ = ("ranked_items", "model_versions")
    RANKED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ranked_items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredItem]
    model_versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    def __init__(self, ranked_items: _Optional[_Iterable[_Union[_common_pb2.ScoredItem, _Mapping]]] = ..., model_versions: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ...) -> None: ...
