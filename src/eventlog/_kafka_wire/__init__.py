"""Kafka's wire protocol on a log directory: the rooms behind ``eventlog.serve``.

    _codec            primitive types (ints, varints, compact strings, tagged fields)
    _types, _apis     the schema engine and the request/response schemas per API version
    _batch            RecordBatch v2 (CRC-32C) <-> eventlog batches; _compression: codecs
    _server           the socket server: framing, limits, ordering, ApiVersions
    _admin            Metadata and topic administration handlers
    _produce          Produce, InitProducerId, ListOffsets
    _fetch            Fetch with its long poll
    _group_coordinator, _group_apis   consumer groups of Kafka clients, offsets in eventlog
    _topic_configs    Kafka topic config names <-> eventlog topic settings
    _errors           Kafka error codes

Data flows as in the rest of eventlog: a request is decoded here, handed to the log's
public methods or its ``Backend``/``PartitionBackend`` seam, and the answer encoded
back; nothing here reads another layer's private state.
"""
