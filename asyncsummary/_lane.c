/* The native lane: a writer thread that frames and write(2)s batches of plain slots to
 * a local event file without ever taking the GIL.
 *
 * Why: a Python-bound trainer holds the GIL all the time, so every time a background
 * thread wants it, it waits for the switch interval (5 ms), forces a switch, and the
 * trainer's step waits while that thread holds it. The asyncio drain needs the GIL
 * several times per batch (the loop's wake-up, framing's return, the file thread's
 * write before and after, the loop again), and each is a stalled step: about one per
 * 5 ms, enough to set a trainer's p99. The lane needs it never: the caller's add hands
 * it a full batch of slots (a pointer swap, see _queue.c), the lane frames and writes
 * it with no Python API at all, and hands the finished slots back for the caller's
 * next adds to free, a few at a time.
 *
 * The engine (_engine.py) stays the master: it starts the lane only while it holds
 * nothing itself (a local FileSink open, no batch of its own unwritten), stops it
 * before it touches the file (flush, the flush_secs timer, close, rotation, a slot the
 * lane cannot frame), and collects what it wrote. The lane tells the loop through a
 * pipe only when the loop waits for it, on an error, and when its file is full: not
 * per batch. On a write error the lane keeps the unwritten framed bytes for the engine,
 * which writes them again from the exact byte where the failure stopped.
 *
 * Locking: lane_t's fields are guarded by its mutex (the GIL guards nothing here). The
 * thread never holds the mutex while it frames or writes, and no GIL holder waits on
 * anything but the mutex, so neither side can stall the other for long.
 */
#include "_native.h"

#ifdef _WIN32
/* No lane on Windows (no pthreads, no pipes): the loop writes every batch. */
const int HAVE_LANE = 0;
lane_t *lane_new(void) {
    PyErr_SetString(PyExc_NotImplementedError, "the native lane needs POSIX threads");
    return NULL;
}
int lane_fd(lane_t *L) { return -1; }
int lane_start(lane_t *L, int fd, long long budget) { return -1; }
int lane_stop(lane_t *L) { return 1; }
int lane_is_on(lane_t *L) { return 0; }
int lane_idle(lane_t *L) { return 1; }
void lane_want(lane_t *L) {}
int lane_done(lane_t *L) { return 1; }
int lane_offer(lane_t *L, const ring_t *b, Py_ssize_t t, long long s, ring_t *f) { return 0; }
int lane_collect(lane_t *L, ring_t *fin, lane_result_t *out) { return -1; }
void lane_held(lane_t *L, Py_ssize_t *e, Py_ssize_t *t, long long *w, long long *b,
               long long *n) {}
int lane_release(lane_t *L, ring_t *fin, ring_t *held) { return 0; }
#else
const int HAVE_LANE = 1;

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a lane that an add found busy waits, once done, for an add to hand it the
 * ring that filled meanwhile; then it asks the loop to take it (the adds stopped). */
#define WANT_WAIT_NS (10 * 1000 * 1000)

/* The clock of that wait: monotonic where condition variables can use it (not macOS). */
#if defined(__APPLE__)
#define WAIT_CLOCK CLOCK_REALTIME
#else
#define WAIT_CLOCK CLOCK_MONOTONIC
#endif

struct lane {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;         /* the queue's and the thread's */
    int thread_alive; /* a thread was started and has not ended */
    int no_thread;    /* the errno of a thread that could not be started */
    pid_t pid;        /* the process the mutex and thread belong to */
    int pipe_r, pipe_w;
    /* control */
    int on;          /* the queue may hand batches over */
    int quit;        /* the thread ends once idle */
    int notify_idle; /* the loop waits for the current batch */
    int busy;        /* a batch is held (read without the mutex as a hint) */
    int want;        /* an add found it busy with a full ring (see lane_want) */
    int fd;          /* the event file */
    long long budget; /* bytes this file may still take before the engine rotates it */
    /* the batch being written: owned by the thread while busy */
    ring_t in;
    Py_ssize_t in_taken;
    long long in_seq;
    /* results, for the queue (finished slots) and the engine (lane_collect) */
    ring_t fin; /* written (or failed) slots, still holding their objects */
    long long events, bytes, done_seq, batches;
    int err;                     /* errno of a failed batch, 0 if none */
    /* A failed batch's unwritten part: buf[rest_off:buf_len], then its slots from
     * rest_next on (not framed yet). */
    size_t rest_off;
    Py_ssize_t rest_next, rest_events, rest_taken;
    long long rest_seq;
    /* the thread's framing buffer: CHUNK bytes */
    uint8_t *buf;
    size_t buf_len;
};

static void lane_unref_locked(lane_t *L) {
    /* Called with the mutex held; frees the lane (and unlocks) on the last reference. */
    if (--L->refs > 0) {
        pthread_mutex_unlock(&L->mu);
        return;
    }
    pthread_mutex_unlock(&L->mu);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv);
    close(L->pipe_r);
    close(L->pipe_w);
    free(L->buf);
    free(L);
}

static void tell_loop(lane_t *L) {
    char x = 1;
    ssize_t r = write(L->pipe_w, &x, 1); /* full pipe: the loop is told already */
    (void)r;
}

/* The framing buffer: a batch is framed and written this much at a time (a record the
 * lane frames is at most SMALL_MAX bytes of payload and its envelope), so its copy of
 * a backlog never takes more memory than this. */
#define CHUNK (1 << 20)
/* Writes L->buf from *off; 0, or an errno (then *off is where it stopped). */
static int write_all(int fd, const uint8_t *buf, size_t len, size_t *off) {
    while (*off < len) {
        ssize_t n = write(fd, buf + *off, len - *off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        *off += (size_t)n;
    }
    return 0;
}

/* Idle, with the mutex held: waits for a batch or quit. A full ring left behind while
 * it was busy (want) is waited for WANT_WAIT_NS, then left to the loop. */
static void wait_for_batch(lane_t *L) {
    while (!L->busy && !L->quit) {
        if (__atomic_exchange_n(&L->want, 0, __ATOMIC_SEQ_CST) && L->on) {
            struct timespec until;
            clock_gettime(WAIT_CLOCK, &until);
            until.tv_nsec += WANT_WAIT_NS;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            while (!L->busy && !L->quit)
                if (pthread_cond_timedwait(&L->cv, &L->mu, &until) == ETIMEDOUT) break;
            if (!L->busy && !L->quit && L->on) tell_loop(L);
            continue;
        }
        pthread_cond_wait(&L->cv, &L->mu);
    }
}

/* Frames and writes L->in, a chunk at a time; 0, or an errno: then the unwritten part
 * is buf[*off:buf_len] and the slots from *next on. *written: bytes written. */
static int write_batch(lane_t *L, int fd, size_t *written, Py_ssize_t *next, size_t *off) {
    Py_ssize_t i = 0;
    while (i < L->in.count) {
        uint8_t *p = L->buf;
        for (; i < L->in.count; i++) {
            const slot_t *s = ring_at(&L->in, i);
            if (p != L->buf && (size_t)(p - L->buf) + slot_record_size(s) > CHUNK) break;
            p = put_slot_record(p, s);
        }
        L->buf_len = (size_t)(p - L->buf);
        *off = 0;
        int err = write_all(fd, L->buf, L->buf_len, off);
        *written += *off;
        if (err) {
            *next = i;
            return err;
        }
    }
    return 0;
}

static void *lane_main(void *arg) {
    lane_t *L = arg;
#ifdef __linux__
    pthread_setname_np(pthread_self(), "asyncsum-lane"); /* for top -H, py-spy, gdb */
#endif
    /* Signals are Python's, handled in the main thread: none is delivered here (and
     * none interrupts a write here). */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&L->mu);
    for (;;) {
        wait_for_batch(L);
        if (!L->busy) break; /* quit, and idle */
        int fd = L->fd;
        pthread_mutex_unlock(&L->mu);
        size_t written = 0, off = 0;
        Py_ssize_t next = 0;
        int err = write_batch(L, fd, &written, &next, &off);
        pthread_mutex_lock(&L->mu);
        L->fin = L->in; /* freed by the caller's next adds, or by lane_collect */
        L->in.count = 0;
        L->in.slots = NULL;
        L->bytes += (long long)written;
        L->budget -= (long long)written;
        if (err) {
            L->err = err;
            L->rest_off = off;
            L->rest_next = next;
            L->rest_events = L->fin.count;
            L->rest_taken = L->in_taken;
            L->rest_seq = L->in_seq;
            L->on = 0;
        } else {
            L->events += L->fin.count;
            L->done_seq = L->in_seq;
            L->batches++;
            if (L->budget <= 0) L->on = 0; /* the engine rotates the file */
        }
        __atomic_store_n(&L->busy, 0, __ATOMIC_SEQ_CST);
        if (L->notify_idle || err || !L->on) {
            L->notify_idle = 0;
            tell_loop(L);
        }
    }
    L->thread_alive = 0;
    lane_unref_locked(L);
    return NULL;
}

lane_t *lane_new(void) {
    lane_t *L = calloc(1, sizeof(lane_t));
    if (L == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    L->buf = malloc(CHUNK);
    if (L->buf == NULL) {
        free(L);
        PyErr_NoMemory();
        return NULL;
    }
    int fds[2];
    if (pipe(fds) < 0) {
        free(L->buf);
        free(L);
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    L->pipe_r = fds[0];
    L->pipe_w = fds[1];
    pthread_mutex_init(&L->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
#if !defined(__APPLE__)
    pthread_condattr_setclock(&attr, WAIT_CLOCK);
#endif
    pthread_cond_init(&L->cv, &attr);
    pthread_condattr_destroy(&attr);
    L->refs = 1;
    L->pid = getpid();
    L->fd = -1;
    return L;
}

int lane_fd(lane_t *L) { return L->pipe_r; }

/* Starts the thread, with the mutex held: at the first batch handed over, so that a
 * writer whose batches the lane never gets (a summary in each) has no thread for it.
 * An errno, or 0. */
static int start_thread(lane_t *L) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    L->quit = 0;
    L->refs++;
    int rc = pthread_create(&thread, &attr, lane_main, L);
    pthread_attr_destroy(&attr);
    if (rc) {
        L->refs--;
        L->no_thread = rc;
        return rc;
    }
    L->thread_alive = 1;
    return 0;
}

int lane_start(lane_t *L, int fd, long long budget) {
    pthread_mutex_lock(&L->mu);
    int rc = L->no_thread;
    if (rc == 0) {
        L->fd = fd;
        L->budget = budget;
        L->on = 1;
    }
    pthread_mutex_unlock(&L->mu);
    if (rc) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

int lane_stop(lane_t *L) {
    pthread_mutex_lock(&L->mu);
    L->on = 0;
    int idle = !L->busy;
    L->notify_idle = !idle;
    pthread_mutex_unlock(&L->mu);
    return idle;
}

int lane_is_on(lane_t *L) { return __atomic_load_n(&L->on, __ATOMIC_RELAXED); }

int lane_offer(lane_t *L, const ring_t *batch, Py_ssize_t taken, long long seq, ring_t *fin) {
    if (__atomic_load_n(&L->busy, __ATOMIC_SEQ_CST)) return 0;
    pthread_mutex_lock(&L->mu);
    if (L->busy || !L->on || (!L->thread_alive && start_thread(L))) {
        pthread_mutex_unlock(&L->mu);
        return 0; /* a thread that could not be started: lane_start says so */
    }
    *fin = L->fin;
    L->fin.slots = NULL;
    L->fin.count = 0;
    L->in = *batch;
    L->in_taken = taken;
    L->in_seq = seq;
    __atomic_store_n(&L->busy, 1, __ATOMIC_SEQ_CST);
    pthread_cond_signal(&L->cv);
    pthread_mutex_unlock(&L->mu);
    return 1;
}

int lane_idle(lane_t *L) { return !__atomic_load_n(&L->busy, __ATOMIC_SEQ_CST); }

void lane_want(lane_t *L) {
    /* With the store of busy = 0 and the load of want in the thread (both seq_cst),
     * either the add that sets this sees the lane idle and hands the ring over, or
     * the lane, once done, sees this. */
    __atomic_store_n(&L->want, 1, __ATOMIC_SEQ_CST);
}

int lane_done(lane_t *L) {
    pthread_mutex_lock(&L->mu);
    int done = !L->busy && !L->err;
    pthread_mutex_unlock(&L->mu);
    return done;
}

int lane_collect(lane_t *L, ring_t *fin, lane_result_t *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&L->mu);
    if (L->busy) {
        pthread_mutex_unlock(&L->mu);
        PyErr_SetString(PyExc_RuntimeError, "the lane is still writing");
        return -1;
    }
    if (L->err) {
        /* The unwritten part: the rest of the chunk being written, then the slots not
         * framed yet, framed now. */
        size_t head = L->buf_len - L->rest_off, total = head;
        for (Py_ssize_t i = L->rest_next; i < L->fin.count; i++)
            total += slot_record_size(ring_at(&L->fin, i));
        out->rest = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (out->rest == NULL) {
            pthread_mutex_unlock(&L->mu);
            return -1;
        }
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out->rest);
        memcpy(p, L->buf + L->rest_off, head);
        p += head;
        for (Py_ssize_t i = L->rest_next; i < L->fin.count; i++)
            p = put_slot_record(p, ring_at(&L->fin, i));
        out->err = L->err;
        out->rest_events = L->rest_events;
        out->rest_taken = L->rest_taken;
        out->rest_seq = L->rest_seq;
        L->err = 0;
    }
    *fin = L->fin;
    L->fin.slots = NULL;
    L->fin.count = 0;
    out->events = L->events;
    out->bytes = L->bytes;
    out->seq = L->done_seq;
    out->batches = L->batches;
    L->events = L->bytes = 0;
    pthread_mutex_unlock(&L->mu);
    return 0;
}

void lane_held(lane_t *L, Py_ssize_t *events, Py_ssize_t *taken, long long *written,
               long long *bytes, long long *batches) {
    pthread_mutex_lock(&L->mu);
    *events = L->busy ? L->in.count : 0;
    *taken = L->busy ? L->in_taken : 0;
    *written = L->events;
    *bytes = L->bytes;
    *batches = L->batches;
    pthread_mutex_unlock(&L->mu);
}

int lane_release(lane_t *L, ring_t *fin, ring_t *held) {
    held->count = 0;
    held->slots = NULL;
    if (L->pid != getpid()) {
        /* A forked child's copy: its mutex may be held by a thread that is not here,
         * and no thread of it runs. What it holds is this process's to free. */
        *fin = L->fin;
        if (L->busy) *held = L->in;
        close(L->pipe_r);
        close(L->pipe_w);
        free(L->buf);
        free(L);
        return 1;
    }
    pthread_mutex_lock(&L->mu);
    *fin = L->fin;
    L->fin.slots = NULL;
    L->fin.count = 0;
    /* A batch still being written (a hung write) keeps its objects: the thread owns
     * it and ends when the write returns. */
    L->quit = 1;
    L->on = 0;
    pthread_cond_signal(&L->cv);
    lane_unref_locked(L);
    return 0;
}
#endif
