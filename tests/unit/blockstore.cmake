# blockstore unit tests (lanes_store core: refs, import, disk engine).
lanes_unit_test(test_store
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_store.c
    LIBS lanes_store PkgConfig::CRYPTO)
lanes_unit_test(test_store_gc
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_store_gc.c
    LIBS lanes_store PkgConfig::CRYPTO)
lanes_unit_test(test_store_pack
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_store_pack.c
    LIBS lanes_store PkgConfig::CRYPTO)
