# common/proto: the control-protocol codec (runs under ASan too).
lanes_unit_test(test_proto SOURCES unit/test_proto.c LIBS lanes_proto)
