"""Request and response schemas of Kafka's transaction APIs (the ``Api`` entries that
``_apis.APIS`` adds): AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit.

Field lists follow Kafka's message definitions (``AddPartitionsToTxnRequest.json`` and
so on); versions are those this server implements and tests. The handlers are
``_txn_apis``.
"""

from __future__ import annotations

from ._types import ARRAY, BOOL, INT16, INT32, INT64, NSTRING, STRING, Array, Field, Struct

__all__ = ["ADD_OFFSETS_TO_TXN", "ADD_PARTITIONS_TO_TXN", "END_TXN", "TXN_APIS", "Schema",
           "TXN_OFFSET_COMMIT"]

F = Field

# (key, name, min version, max version, first flexible version, request, response):
# the fields of ``_apis.Api``, which builds them (this module stays below it).
Schema = tuple[int, str, int, int, int, Struct, Struct]

ADD_PARTITIONS_TO_TXN: Schema = (24, "AddPartitionsToTxn", 0, 2, 3, Struct(
    F("transactional_id", STRING),
    F("producer_id", INT64),
    F("producer_epoch", INT16),
    F("topics", ARRAY(F("name", STRING), F("partitions", Array(INT32)))),
), Struct(
    F("throttle_time_ms", INT32),
    F("results", ARRAY(
        F("name", STRING),
        F("results", ARRAY(F("partition_index", INT32), F("error_code", INT16))))),
))

ADD_OFFSETS_TO_TXN: Schema = (25, "AddOffsetsToTxn", 0, 2, 3, Struct(
    F("transactional_id", STRING),
    F("producer_id", INT64),
    F("producer_epoch", INT16),
    F("group_id", STRING),
), Struct(
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
))

END_TXN: Schema = (26, "EndTxn", 0, 2, 3, Struct(
    F("transactional_id", STRING),
    F("producer_id", INT64),
    F("producer_epoch", INT16),
    F("committed", BOOL),
), Struct(
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
))

TXN_OFFSET_COMMIT: Schema = (28, "TxnOffsetCommit", 0, 3, 3, Struct(
    F("transactional_id", STRING),
    F("group_id", STRING),
    F("producer_id", INT64),
    F("producer_epoch", INT16),
    F("generation_id", INT32, 3, default=-1),
    F("member_id", STRING, 3),
    F("group_instance_id", NSTRING, 3),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(
            F("partition_index", INT32),
            F("committed_offset", INT64),
            F("committed_leader_epoch", INT32, 2, default=-1),
            F("committed_metadata", NSTRING))))),
), Struct(
    F("throttle_time_ms", INT32),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(F("partition_index", INT32), F("error_code", INT16))))),
))

TXN_APIS: tuple[Schema, ...] = (ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN,
                                TXN_OFFSET_COMMIT)
