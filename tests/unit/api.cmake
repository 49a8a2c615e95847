# api component: lanes_http (server library) and lanectl's library.
lanes_unit_test(test_http SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_http.c
                LIBS lanes_http PkgConfig::JSONC pthread)
if(TARGET lanes_lanectl)
    lanes_unit_test(test_lanectl SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_lanectl.c
                    LIBS lanes_lanectl PkgConfig::JSONC)
endif()
if(TARGET lanes_lanectl)
    lanes_unit_test(test_lanectl_ws SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_lanectl_ws.c
                    LIBS lanes_lanectl)
endif()
if(TARGET lanes_lanectl)
    lanes_unit_test(test_lanectl_progress SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_lanectl_progress.c
                    LIBS lanes_lanectl)
endif()
