# guest: lane-init's agent, driven over a socketpair (--agent-fd mode).
# guest/ is not built under ASan (static binary), so this is skipped there.
if(TARGET lane-init)
    lanes_unit_test(test_guest_agent SOURCES unit/test_guest_agent.c LIBS lanes_proto PkgConfig::CRYPTO)
    target_compile_definitions(test_guest_agent PRIVATE LANE_INIT_PATH="$<TARGET_FILE:lane-init>")
    add_dependencies(test_guest_agent lane-init)
endif()
