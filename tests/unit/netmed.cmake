# netmed: pure core (addresses, policy, DNS codec + name table, HTTP heads,
# secrets filter). Table-driven; runs under ASan too.
if(TARGET lanes_netmed_core)
    lanes_unit_test(test_netmed SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_netmed.c LIBS lanes_netmed_core)
    lanes_unit_test(test_netmed_approval SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_netmed_approval.c LIBS lanes_netmed_core)
endif()
