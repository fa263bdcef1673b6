/* What the connection needs from the buffer beyond the public API. */
#ifndef NET__BUFFER_INTERNAL_H
#define NET__BUFFER_INTERNAL_H

#include <net/buffer.h>

/* As net_buf_read_fd, reading at most max (> 0) bytes: a connection that
 * may take only a little more under the server's memory budget must not
 * pull a whole socket buffer in one read. */
ssize_t net__buf_read_fd_max(net_buf_t *buf, int fd, size_t max);

#endif
