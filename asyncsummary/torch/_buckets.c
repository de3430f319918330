/* asyncsummary.torch._buckets: counts of values in the default histogram buckets.
 *
 * One job: add_histogram's bins='tensorflow' buckets (edges -p[L-1] .. -p[0], 0,
 * p[0] .. p[L-1], with p[j] = 1e-12 * 1.1**j as torch computes them) counted in one
 * pass over float64 values, with the GIL released, exactly as np.histogram counts
 * them: bucket i is [E[i], E[i+1]), the last one closed, values outside [E[0], E[-1]]
 * and NaN not counted. The NumPy code in _histogram.py does the same in about 15
 * array passes (it is the fallback, and the reference of the tests).
 *
 * How a value finds its bucket without a search: its top 16 IEEE bits (sign, 11
 * exponent bits, the top 4 mantissa bits) name a cell. A cell spans a ratio of at most
 * 1 + 1/16 between its ends, less than the 1.1 between two edges, so at most one
 * boundary (an edge, or the end of the range) falls inside it, and within a cell the
 * bucket is a step function of |v|'s bits (IEEE order is numeric order for |v|). The
 * table (made and checked against np.histogram's rule in _histogram._table()) gives
 * per cell the first |v| bits at or past the step and the buckets below and from it;
 * one integer comparison picks the bucket. Values outside the range and NaN go to an
 * extra last slot of counts, which the caller drops.
 *
 * No branch depends on the data: a value's sign and its side of a cell's step are as
 * random as the data, and mispredicted branches on them cost more than the work
 * (this loop takes about 1.5 ns per value here, the branching one it replaced 3.3-4.5).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define CELL_SHIFT 48
#define CELLS (1 << 16)

/* One cell: |v| bits >= step -> bucket high, else bucket low. The layout is
 * _histogram._TABLE_DTYPE's. */
typedef struct {
    uint64_t step;
    int32_t low, high;
} cell_t;

PyDoc_STRVAR(count_doc,
"count(values, table, counts) -> misplaced\n\n"
"Add to counts (int64, one per bucket plus a last slot for values in none) the\n"
"bucket counts of values (float64), through the cell table (2**16 cells of\n"
"_histogram._TABLE_DTYPE). Every buffer must be C-contiguous; the GIL is released\n"
"while counting. Returns how many values the table sent past counts (0 unless the\n"
"table does not fit counts; those are not counted).");

static PyObject *count(PyObject *self, PyObject *args) {
    Py_buffer values, table, counts;
    if (!PyArg_ParseTuple(args, "y*y*w*", &values, &table, &counts)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = values.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t slots = counts.len / (Py_ssize_t)sizeof(int64_t);
    if (values.len % (Py_ssize_t)sizeof(double) || table.len != (Py_ssize_t)sizeof(cell_t) * CELLS ||
        counts.len % (Py_ssize_t)sizeof(int64_t) || slots < 1) {
        PyErr_SetString(PyExc_ValueError, "count(): buffers of the wrong sizes");
        goto done;
    }
    const double *x = (const double *)values.buf;
    const cell_t *cell = (const cell_t *)table.buf;
    int64_t *c = (int64_t *)counts.buf;
    Py_ssize_t misplaced = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &x[i], 8);
        const cell_t *e = &cell[bits >> CELL_SHIFT];
        uint64_t magnitude = bits & ~(UINT64_C(1) << 63);
        int64_t low = e->low, high = e->high;
        int64_t bucket = low + ((high - low) & -(int64_t)(magnitude >= e->step));
        if ((uint64_t)bucket < (uint64_t)slots) /* always, with _table()'s: predicted */
            c[bucket]++;
        else
            misplaced++;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(misplaced);
done:
    PyBuffer_Release(&values);
    PyBuffer_Release(&table);
    PyBuffer_Release(&counts);
    return result;
}

static PyMethodDef methods[] = {
    {"count", count, METH_VARARGS, count_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "asyncsummary.torch._buckets",
    "Counts of values in add_histogram's default buckets (see asyncsummary/torch/_histogram.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__buckets(void) { return PyModule_Create(&module); }
