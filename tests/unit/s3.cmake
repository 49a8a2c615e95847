# blockstore/s3 unit tests: SigV4 vectors and credentials (test_s3_sign);
# the client and the lease protocol against recorded S3 responses served by
# a loopback replay server (test_s3_client, test_s3_lease; stand-in for S3,
# see test_s3_replay.c).
lanes_unit_test(test_s3_sign
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_s3_sign.c
    LIBS lanes_s3)
lanes_unit_test(test_s3_client
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_s3_client.c
            ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_s3_replay.c
    LIBS lanes_s3)
target_compile_definitions(test_s3_client PRIVATE
    S3_TEST_DATA="${CMAKE_CURRENT_SOURCE_DIR}/unit/data/s3")
lanes_unit_test(test_s3_lease
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_s3_lease.c
            ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_s3_replay.c
    LIBS lanes_s3)
target_compile_definitions(test_s3_lease PRIVATE
    S3_TEST_DATA="${CMAKE_CURRENT_SOURCE_DIR}/unit/data/s3")
# The block store's S3 backend (objects-s3.c): fencing of a stale writer and
# the lease checks, against recorded responses of an enforcing store.
lanes_unit_test(test_s3_store
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_s3_store.c
            ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_s3_replay.c
    LIBS lanes_store lanes_s3)
target_compile_definitions(test_s3_store PRIVATE
    S3_TEST_DATA="${CMAKE_CURRENT_SOURCE_DIR}/unit/data/s3")
