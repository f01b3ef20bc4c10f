from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("message", "count")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    message: str
    count: int
    def __init__(self, message: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("index", "message", "pod")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    index: int
    message: str
    pod: str
    def __init__(self, index: _Optional[int] = ..., message: _Optional[str] = ..., pod: _Optional[str] = ...) -> None: ...
