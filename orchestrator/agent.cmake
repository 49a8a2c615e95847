# lanes_agent: lanesd's client for the guest control channel (agent.h).
# Included from orchestrator/CMakeLists.txt.
add_library(lanes_agent STATIC ${CMAKE_CURRENT_LIST_DIR}/agent.c)
target_include_directories(lanes_agent PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(lanes_agent PUBLIC lanes_proto PkgConfig::UV)
