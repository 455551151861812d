/*
 * strata_echo: a C program on libstrata (capi/include/strata.h), driven
 * by tests/tests/capi.rs against kernel peers in the test's namespace.
 *
 *   strata_echo client PORT      non-blocking connect to 10.77.0.1:PORT
 *                                (an echo server), 1 MiB through it with
 *                                poll(2), checked on the way back
 *   strata_echo server PORT N    listen on PORT, accept one connection,
 *                                read N bytes (MSG_WAITALL), check them,
 *                                send them back inverted, close
 *   strata_echo udp PORT ECHO    bind PORT, datagrams to and from a UDP
 *                                echo server at 10.77.0.1:ECHO, one thread
 *                                blocked in recvfrom meanwhile
 *   strata_echo errors PORT      error cases (PORT: closed on 10.77.0.1)
 *
 * Each prints what it checked ("... ok", "check NAME ERRNO") and exits 0,
 * or prints "FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "strata.h"

#define HOST_IP "10.77.0.1"
/* Bound for a wait that a working stack never reaches. */
#define PATIENCE_MS 60000

static const char *ename(int e) {
	switch (e) {
	case 0: return "0";
	case EAGAIN: return "EAGAIN";
	case EINPROGRESS: return "EINPROGRESS";
	case EALREADY: return "EALREADY";
	case EISCONN: return "EISCONN";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ECONNABORTED: return "ECONNABORTED";
	case EADDRINUSE: return "EADDRINUSE";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case ESOCKTNOSUPPORT: return "ESOCKTNOSUPPORT";
	case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
	case EINVAL: return "EINVAL";
	case ENOTCONN: return "ENOTCONN";
	case EPIPE: return "EPIPE";
	case EBADF: return "EBADF";
	case ENOTSOCK: return "ENOTSOCK";
	case ENOPROTOOPT: return "ENOPROTOOPT";
	case EFAULT: return "EFAULT";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EDESTADDRREQ: return "EDESTADDRREQ";
	case ETIMEDOUT: return "ETIMEDOUT";
	default: return "other";
	}
}

static void fail(const char *what) {
	int e = errno;
	printf("FAIL %s: errno %s (%d) %s\n", what, ename(e), e, strerror(e));
	fflush(stdout);
	exit(1);
}

/* Byte i of the test pattern (the Python peers make the same). */
static unsigned char pat(size_t i) {
	return (unsigned char)((i * 31 + (i >> 8)) & 0xff);
}

static struct sockaddr_in addr(const char *ip, int port) {
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		printf("FAIL bad address %s\n", ip);
		exit(1);
	}
	return a;
}

#define SA(a) ((struct sockaddr *)&(a))

/* Waits for the fd to turn readable (any change, strata's contract). */
static void wait_ready(int fd, const char *what) {
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, PATIENCE_MS);
	if (r < 0)
		fail(what);
	if (r == 0) {
		printf("FAIL %s: nothing within %d ms\n", what, PATIENCE_MS);
		exit(1);
	}
}

/* Prints a check: the errno a call that must fail failed with. */
static void expect_fail(const char *name, long r) {
	if (r != -1) {
		printf("FAIL %s: returned %ld, not -1\n", name, r);
		exit(1);
	}
	printf("check %s %s\n", name, ename(errno));
}

/* Prints a check: what a call that must succeed returned. */
static void expect_value(const char *name, long r) {
	if (r < 0)
		fail(name);
	printf("check %s =%ld\n", name, r);
}

static int getint(int fd, int level, int name) {
	int v = -1;
	socklen_t len = sizeof v;
	if (strata_getsockopt(fd, level, name, &v, &len) != 0)
		fail("getsockopt");
	if (len != sizeof v) {
		printf("FAIL getsockopt length %u\n", (unsigned)len);
		exit(1);
	}
	return v;
}

static int client(int port) {
	const size_t total = 1 << 20;
	unsigned char *data = malloc(total);
	unsigned char rbuf[65536];
	if (!data)
		fail("malloc");
	for (size_t i = 0; i < total; i++)
		data[i] = pat(i);

	int fd = strata_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		fail("socket");
	int one = 1;
	if (strata_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		fail("TCP_NODELAY");
	struct sockaddr_in to = addr(HOST_IP, port);
	if (strata_connect(fd, SA(to), sizeof to) == 0) {
		printf("connected at once\n");
	} else if (errno != EINPROGRESS) {
		fail("connect");
	} else {
		/* Until the handshake's end: SO_ERROR 0 and a peer. */
		for (;;) {
			int err = getint(fd, SOL_SOCKET, SO_ERROR);
			if (err != 0) {
				errno = err;
				fail("SO_ERROR after connect");
			}
			struct sockaddr_in peer;
			socklen_t plen = sizeof peer;
			if (strata_getpeername(fd, SA(peer), &plen) == 0)
				break;
			if (errno != ENOTCONN)
				fail("getpeername");
			wait_ready(fd, "connect");
		}
		printf("connect EINPROGRESS then connected\n");
	}
	if (getint(fd, IPPROTO_TCP, TCP_NODELAY) != 1) {
		printf("FAIL TCP_NODELAY not kept\n");
		return 1;
	}

	size_t sent = 0, got = 0;
	int shut = 0, eof = 0;
	while (!eof) {
		/* Edge-like readiness: call until EAGAIN, then wait. */
		while (sent < total) {
			size_t n = total - sent < 65536 ? total - sent : 65536;
			ssize_t r = strata_send(fd, data + sent, n, MSG_NOSIGNAL);
			if (r < 0) {
				if (errno == EAGAIN)
					break;
				fail("send");
			}
			sent += (size_t)r;
		}
		if (sent == total && !shut) {
			if (strata_shutdown(fd, SHUT_WR) != 0)
				fail("shutdown");
			shut = 1;
		}
		for (;;) {
			ssize_t r = strata_recv(fd, rbuf, sizeof rbuf, 0);
			if (r < 0) {
				if (errno == EAGAIN)
					break;
				fail("recv");
			}
			if (r == 0) {
				eof = 1;
				break;
			}
			for (ssize_t i = 0; i < r; i++) {
				if (got + (size_t)i >= total || rbuf[i] != pat(got + (size_t)i)) {
					printf("FAIL echo differs at byte %zu\n", got + (size_t)i);
					return 1;
				}
			}
			got += (size_t)r;
		}
		if (!eof)
			wait_ready(fd, "echo");
	}
	if (got != total) {
		printf("FAIL echoed %zu of %zu bytes\n", got, total);
		return 1;
	}
	if (strata_close(fd) != 0)
		fail("close");
	printf("client ok %zu\n", got);
	free(data);
	return 0;
}

static int server(int port, size_t n) {
	int fd = strata_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail("socket");
	int one = 1;
	if (strata_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
		fail("SO_REUSEADDR");
	struct sockaddr_in any = addr("0.0.0.0", port);
	if (strata_bind(fd, SA(any), sizeof any) != 0)
		fail("bind");
	if (strata_listen(fd, 16) != 0)
		fail("listen");
	struct sockaddr_in me;
	socklen_t mlen = sizeof me;
	if (strata_getsockname(fd, SA(me), &mlen) != 0)
		fail("getsockname");
	if (mlen != sizeof me || ntohs(me.sin_port) != port) {
		printf("FAIL listening on port %d\n", ntohs(me.sin_port));
		return 1;
	}
	if (!getint(fd, SOL_SOCKET, SO_REUSEADDR) || !getint(fd, SOL_SOCKET, SO_ACCEPTCONN)) {
		printf("FAIL listener options\n");
		return 1;
	}
	printf("listening %d\n", port);
	fflush(stdout);

	struct sockaddr_in peer;
	socklen_t plen = sizeof peer;
	int c = strata_accept(fd, SA(peer), &plen);
	if (c < 0)
		fail("accept");
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
	struct sockaddr_in peer2;
	socklen_t plen2 = sizeof peer2;
	if (strata_getpeername(c, SA(peer2), &plen2) != 0)
		fail("getpeername");
	if (peer2.sin_port != peer.sin_port || peer2.sin_addr.s_addr != peer.sin_addr.s_addr) {
		printf("FAIL accept and getpeername disagree\n");
		return 1;
	}
	printf("accepted from %s\n", ip);
	if (!strata_is_socket(c) || getint(c, SOL_SOCKET, SO_TYPE) != SOCK_STREAM) {
		printf("FAIL accepted socket\n");
		return 1;
	}

	unsigned char *buf = malloc(n ? n : 1);
	if (!buf)
		fail("malloc");
	ssize_t r = strata_recv(c, buf, n, MSG_WAITALL);
	if (r < 0)
		fail("recv MSG_WAITALL");
	if ((size_t)r != n) {
		printf("FAIL MSG_WAITALL gave %zd of %zu\n", r, n);
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		if (buf[i] != pat(i)) {
			printf("FAIL received data differs at byte %zu\n", i);
			return 1;
		}
		buf[i] ^= 0xff;
	}
	/* The client shut its side: the end of the stream. */
	unsigned char end;
	if (strata_read(c, &end, 1) != 0)
		fail("read at the end");
	for (size_t done = 0; done < n;) {
		ssize_t w = strata_write(c, buf + done, n - done);
		if (w <= 0)
			fail("write");
		done += (size_t)w;
	}
	if (strata_close(c) != 0 || strata_close(fd) != 0)
		fail("close");
	printf("server ok %zu\n", n);
	free(buf);
	return 0;
}

struct blocked {
	int fd;
	ssize_t got;
	struct sockaddr_in from;
	char data[64];
};

/* Blocks in recvfrom until the main thread's datagram comes back. */
static void *blocked_recv(void *arg) {
	struct blocked *b = arg;
	socklen_t len = sizeof b->from;
	b->got = strata_recvfrom(b->fd, b->data, sizeof b->data - 1, 0, SA(b->from), &len);
	return NULL;
}

static int udp(int port, int echo) {
	int u = strata_socket(AF_INET, SOCK_DGRAM, 0);
	if (u < 0)
		fail("socket");
	struct sockaddr_in any = addr("0.0.0.0", port);
	if (strata_bind(u, SA(any), sizeof any) != 0)
		fail("bind");
	struct sockaddr_in me;
	socklen_t mlen = sizeof me;
	if (strata_getsockname(u, SA(me), &mlen) != 0 || ntohs(me.sin_port) != port) {
		printf("FAIL bound to port %d\n", ntohs(me.sin_port));
		return 1;
	}
	struct timeval tv = { .tv_sec = PATIENCE_MS / 1000 };
	if (strata_setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
		fail("SO_RCVTIMEO");
	struct sockaddr_in to = addr(HOST_IP, echo);
	unsigned char out[1400], in[2048];
	int rounds = 20;
	for (int k = 0; k < rounds; k++) {
		size_t len = 1 + (size_t)k * 70;
		for (size_t i = 0; i < len; i++)
			out[i] = pat(i + (size_t)k);
		if (strata_sendto(u, out, len, 0, SA(to), sizeof to) != (ssize_t)len)
			fail("sendto");
		/* Peek first: the datagram stays for the recvfrom. */
		ssize_t p = strata_recv(u, in, 1, MSG_PEEK);
		if (p != 1)
			fail("recv MSG_PEEK");
		struct sockaddr_in from;
		socklen_t flen = sizeof from;
		ssize_t r = strata_recvfrom(u, in, sizeof in, 0, SA(from), &flen);
		if (r < 0)
			fail("recvfrom");
		if ((size_t)r != len || memcmp(in, out, len) != 0) {
			printf("FAIL datagram %d came back as %zd bytes, differing\n", k, r);
			return 1;
		}
		if (flen != sizeof from || from.sin_port != to.sin_port ||
		    from.sin_addr.s_addr != to.sin_addr.s_addr) {
			printf("FAIL datagram %d from elsewhere\n", k);
			return 1;
		}
	}
	printf("udp sendto/recvfrom ok %d\n", rounds);

	/* A thread blocked in recvfrom on one socket holds up no other. */
	struct blocked b = { .fd = u };
	pthread_t t;
	if (pthread_create(&t, NULL, blocked_recv, &b) != 0) {
		printf("FAIL pthread_create\n");
		return 1;
	}
	int v = strata_socket(AF_INET, SOCK_DGRAM, 0);
	if (v < 0)
		fail("second socket");
	if (strata_connect(v, SA(to), sizeof to) != 0)
		fail("connect udp");
	if (strata_send(v, "other", 5, 0) != 5)
		fail("send");
	ssize_t r = strata_recv(v, in, sizeof in, 0);
	if (r != 5 || memcmp(in, "other", 5) != 0)
		fail("recv on the other socket");
	if (strata_close(v) != 0)
		fail("close");
	/* Now wake the blocked thread: its datagram comes back to `u`. */
	if (strata_sendto(u, "wake", 4, 0, SA(to), sizeof to) != 4)
		fail("sendto wake");
	pthread_join(t, NULL);
	b.data[b.got > 0 ? b.got : 0] = 0;
	if (b.got != 4 || strcmp(b.data, "wake") != 0) {
		printf("FAIL blocked thread got %zd\n", b.got);
		return 1;
	}
	printf("udp blocked thread ok\n");
	if (strata_close(u) != 0)
		fail("close");
	printf("udp ok\n");
	return 0;
}

static int errors(int closed) {
	struct sockaddr_in nowhere = addr(HOST_IP, closed);

	/* A closed port: the kernel's RST. */
	int t = strata_socket(AF_INET, SOCK_STREAM, 0);
	if (t < 0)
		fail("socket");
	expect_fail("connect_refused", strata_connect(t, SA(nowhere), sizeof nowhere));
	char c;
	expect_fail("recv_after_refused_connect", strata_recv(t, &c, 1, 0));
	strata_close(t);

	/* Non-blocking: EINPROGRESS, then SO_ERROR says it, once. */
	t = strata_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (t < 0)
		fail("socket");
	expect_fail("connect_nonblocking", strata_connect(t, SA(nowhere), sizeof nowhere));
	int err;
	for (;;) {
		err = getint(t, SOL_SOCKET, SO_ERROR);
		if (err != 0)
			break;
		wait_ready(t, "refusal");
	}
	printf("check so_error %s\n", ename(err));
	printf("check so_error_again %s\n", ename(getint(t, SOL_SOCKET, SO_ERROR)));
	/* Linux: the refused connection reads as ended until a connect(),
	 * which says so and lets the socket try again. */
	expect_value("recv_after_refusal", strata_recv(t, &c, 1, 0));
	expect_fail("send_after_refusal", strata_send(t, &c, 1, MSG_NOSIGNAL));
	expect_fail("connect_after_refusal", strata_connect(t, SA(nowhere), sizeof nowhere));
	expect_fail("connect_anew", strata_connect(t, SA(nowhere), sizeof nowhere));
	strata_close(t);

	/* A port in use. */
	int a = strata_socket(AF_INET, SOCK_DGRAM, 0), b = strata_socket(AF_INET, SOCK_DGRAM, 0);
	if (a < 0 || b < 0)
		fail("socket");
	struct sockaddr_in port = addr("0.0.0.0", 7100);
	if (strata_bind(a, SA(port), sizeof port) != 0)
		fail("bind");
	expect_fail("udp_bind_in_use", strata_bind(b, SA(port), sizeof port));
	expect_fail("udp_bind_again", strata_bind(a, SA(port), sizeof port));
	int l1 = strata_socket(AF_INET, SOCK_STREAM, 0), l2 = strata_socket(AF_INET, SOCK_STREAM, 0);
	if (l1 < 0 || l2 < 0)
		fail("socket");
	if (strata_bind(l1, SA(port), sizeof port) != 0 || strata_listen(l1, 4) != 0)
		fail("listen");
	/* TCP takes the port at listen(). */
	if (strata_bind(l2, SA(port), sizeof port) != 0)
		fail("second bind");
	expect_fail("tcp_listen_in_use", strata_listen(l2, 4));

	/* Nothing to receive. */
	int nb = strata_socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (nb < 0)
		fail("socket");
	struct sockaddr_in eph = addr("0.0.0.0", 0);
	if (strata_bind(nb, SA(eph), sizeof eph) != 0)
		fail("bind");
	expect_fail("recv_nonblocking", strata_recv(nb, &c, 1, 0));
	expect_fail("recv_dontwait", strata_recv(b, &c, 1, MSG_DONTWAIT));
	if (strata_fcntl(b, F_SETFL, strata_fcntl(b, F_GETFL, 0) | O_NONBLOCK) != 0)
		fail("F_SETFL");
	if (!(strata_fcntl(b, F_GETFL, 0) & O_NONBLOCK)) {
		printf("FAIL F_GETFL\n");
		return 1;
	}
	expect_fail("recv_after_fcntl", strata_recv(b, &c, 1, 0));
	int l3 = strata_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (l3 < 0)
		fail("socket");
	if (strata_listen(l3, 1) != 0)
		fail("listen anywhere");
	expect_fail("accept_nonblocking", strata_accept(l3, NULL, NULL));

	/* Not connected, not supported, not a socket. */
	int u = strata_socket(AF_INET, SOCK_STREAM, 0);
	if (u < 0)
		fail("socket");
	expect_fail("send_unconnected", strata_send(u, "x", 1, MSG_NOSIGNAL));
	expect_fail("recv_unconnected", strata_recv(u, &c, 1, 0));
	expect_fail("udp_send_no_peer", strata_send(nb, "x", 1, 0));
	expect_fail("unix", strata_socket(AF_UNIX, SOCK_STREAM, 0));
	expect_fail("raw", strata_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
	int v = 1;
	expect_fail("unknown_option", strata_setsockopt(u, SOL_SOCKET, SO_BROADCAST, &v, sizeof v));
	expect_fail("short_option", strata_setsockopt(u, SOL_SOCKET, SO_KEEPALIVE, &v, 2));
	expect_fail("null_address", strata_bind(u, NULL, sizeof port));
	expect_fail("short_address", strata_bind(u, SA(port), 4));
	expect_fail("not_a_socket", strata_recv(0, &c, 1, 0));
	if (strata_close(u) != 0)
		fail("close");
	expect_fail("closed", strata_close(u));
	if (strata_is_socket(u)) {
		printf("FAIL closed fd still a socket\n");
		return 1;
	}
	strata_close(a);
	strata_close(b);
	strata_close(l1);
	strata_close(l2);
	strata_close(l3);
	strata_close(nb);
	printf("errors done\n");
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "client") == 0)
		return client(atoi(argv[2]));
	if (argc == 4 && strcmp(argv[1], "server") == 0)
		return server(atoi(argv[2]), (size_t)atol(argv[3]));
	if (argc == 4 && strcmp(argv[1], "udp") == 0)
		return udp(atoi(argv[2]), atoi(argv[3]));
	if (argc == 3 && strcmp(argv[1], "errors") == 0)
		return errors(atoi(argv[2]));
	fprintf(stderr, "usage: %s client PORT | server PORT N | udp PORT ECHO | errors PORT\n",
		argv[0]);
	return 2;
}
