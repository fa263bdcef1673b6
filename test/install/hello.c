/* Built against an installed netloop through pkg-config (or as a Meson
 * subproject): proves the public headers and the library stand alone. */
#include <stdio.h>

#include <net/loop.h>

static void done(void *arg)
{
    *(int *)arg = 42;
    net_loop_quit(net_loop_current());
}

int main(void)
{
    net_loop_t *loop;
    int value = 0;
    if (net_loop_new(&loop) < 0)
        return 1;
    net_loop_queue_in_loop(loop, done, &value);
    net_loop_run(loop);
    net_loop_free(loop);
    printf("hello from netloop: %d\n", value);
    return value == 42 ? 0 : 1;
}
