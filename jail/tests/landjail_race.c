/* Runs inside the landjail and races the connect supervisor (time-of-check to time-of-use):
 *  - a thread flips a shared sockaddr between the proxy and the far host while the main thread
 *    connects with it;
 *  - a thread swaps the descriptor number between a Unix socket and a TCP socket while the main
 *    thread connects that number to the far host.
 * Prints "ok <proxy connects> <refused>" or "ESCAPED ..." and exits 0/1.
 * Usage: landjail_race <proxy_port> <far_ipv4> <iterations> */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in shared;
static struct sockaddr_in proxy, far;
static atomic_int stop;
static int swap_fd = 100;

static void *flipper(void *arg) {
    (void)arg;
    /* Each address stays for a while, so the supervisor reads either one in full or a torn
     * mix; both must end in the proxy or EACCES. */
    while (!atomic_load(&stop)) {
        memcpy((void *)&shared, &far, sizeof far);
        __asm__ volatile("" ::: "memory");
        for (volatile int i = 0; i < 20000; i++) {}
        memcpy((void *)&shared, &proxy, sizeof proxy);
        __asm__ volatile("" ::: "memory");
        for (volatile int i = 0; i < 20000; i++) {}
    }
    return NULL;
}

static void *swapper(void *arg) {
    int *fds = arg;
    while (!atomic_load(&stop)) {
        dup2(fds[0], swap_fd);
        dup2(fds[1], swap_fd);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int port = atoi(argv[1]), n = atoi(argv[3]);
    memset(&proxy, 0, sizeof proxy);
    proxy.sin_family = AF_INET;
    proxy.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &proxy.sin_addr);
    far = proxy;
    inet_pton(AF_INET, argv[2], &far.sin_addr);
    shared = proxy;

    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    int ok = 0, refused = 0, other = 0;
    for (int i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&shared, sizeof shared) == 0) {
            struct sockaddr_in peer;
            socklen_t len = sizeof peer;
            getpeername(s, (struct sockaddr *)&peer, &len);
            if (peer.sin_addr.s_addr != proxy.sin_addr.s_addr || peer.sin_port != proxy.sin_port) {
                printf("ESCAPED: connected to %s\n", inet_ntoa(peer.sin_addr));
                return 1;
            }
            ok++;
        } else if (errno == EACCES) {
            refused++;
        } else {
            other++;
        }
        close(s);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    atomic_store(&stop, 0);

    int fds[2];
    fds[0] = socket(AF_UNIX, SOCK_STREAM, 0);
    int swapped_ok = 0;
    pthread_t t2;
    for (int i = 0; i < n; i++) {
        fds[1] = socket(AF_INET, SOCK_STREAM, 0);
        pthread_create(&t2, NULL, swapper, fds);
        for (int j = 0; j < 20; j++) {
            if (connect(swap_fd, (struct sockaddr *)&far, sizeof far) == 0) swapped_ok++;
        }
        atomic_store(&stop, 1);
        pthread_join(t2, NULL);
        atomic_store(&stop, 0);
        close(fds[1]);
    }
    if (swapped_ok) {
        printf("ESCAPED: %d connects to the far host with a swapped descriptor\n", swapped_ok);
        return 1;
    }
    printf("ok %d %d %d\n", ok, refused, other);
    return 0;
}
