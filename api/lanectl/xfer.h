/* xfer.h — raw (non-JSON) streamed API transfers for lanectl: a request body
 * read from a file descriptor and/or a response body written to one. Used by
 * logs (response → stdout), cp -r (tar in/out through a local tar process)
 * and files (stat/list). Errors are printed once ("lanectl: <message>"). */
#ifndef LANES_LANECTL_XFER_H
#define LANES_LANECTL_XFER_H

#include "lanectl.h"

/* METHOD path with the body read from in_fd (-1: no body) and a 2xx
 * response body written to out_fd (-1: discarded). Returns 0, or -1 after
 * printing the API's or the transport's error. */
int xfer_fd(lanectl_t *ctx, const char *method, const char *path, int in_fd, int out_fd);
/* xfer_fd with a progress line on stderr labelled `label` (NULL: none). */
int xfer_fd_progress(lanectl_t *ctx, const char *method, const char *path, int in_fd, int out_fd,
                     const char *label);

/* cmd_files.c: lanectl cp -r, directory into / out of a lane (tar);
 * progress: show a progress line (the caller checked the terminal). */
int cp_dir_in(lanectl_t *ctx, const char *local, const char *lane, const char *rpath, bool progress);
int cp_dir_out(lanectl_t *ctx, const char *lane, const char *rpath, const char *local, bool progress);

#endif
