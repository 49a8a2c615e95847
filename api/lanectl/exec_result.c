/* exec_result.c — exit status mapping for lanectl exec (see exec_result.h). */
#include "exec_result.h"

#include <string.h>

#include "lanectl.h"

int exec_result_exit_code(json_object *final)
{
    json_object *exit_o, *err, *v;
    if (final && json_object_object_get_ex(final, "exit", &exit_o) &&
        json_object_is_type(exit_o, json_type_object)) {
        if (json_object_object_get_ex(exit_o, "timed_out", &v) && json_object_get_boolean(v))
            return 124;
        if (json_object_object_get_ex(exit_o, "signal", &v) && json_object_is_type(v, json_type_int)) {
            int sig = json_object_get_int(v);
            if (sig > 0 && sig < 128)
                return 128 + sig;
        }
        if (json_object_object_get_ex(exit_o, "exit_code", &v) && json_object_is_type(v, json_type_int))
            return json_object_get_int(v) & 255;
        return EXIT_EXEC_FAILED;
    }
    if (final && json_object_object_get_ex(final, "error", &err) &&
        json_object_object_get_ex(err, "code", &v)) {
        const char *code = json_object_get_string(v);
        /* The spec's codes, plus the bare ones older lanesd builds send. */
        if (strcmp(code, "command_not_found") == 0 || strcmp(code, "not_found") == 0)
            return 127;
        if (strcmp(code, "command_not_executable") == 0 || strcmp(code, "not_executable") == 0 ||
            strcmp(code, "permission_denied") == 0)
            return 126;
    }
    return EXIT_EXEC_FAILED;
}
