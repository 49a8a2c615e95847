# orchestrator/agent.c: scripted-peer tests always; tests against the real
# guest agent (lane-init --agent-fd) when lane-init is built (not under ASan).
lanes_unit_test(test_agent SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_agent.c LIBS lanes_agent)
if(TARGET lane-init)
    add_test(NAME test_agent_guest COMMAND test_agent --guest $<TARGET_FILE:lane-init>)
    set_tests_properties(test_agent_guest PROPERTIES LABELS unit TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
