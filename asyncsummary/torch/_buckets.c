/* asyncsummary.torch._buckets: counts of values in the default histogram buckets.
 *
 * One job: add_histogram's bins='tensorflow' buckets (edges -p[L-1] .. -p[0], 0,
 * p[0] .. p[L-1], with p[j] = 1e-12 * 1.1**j as torch computes them) counted in one
 * pass over float64 values, with the GIL released, exactly as np.histogram counts
 * them: bucket i is [E[i], E[i+1]), the last one closed, values outside [E[0], E[-1]]
 * and NaN not counted. The NumPy code in _histogram.py does the same in about 15
 * array passes (it is the fallback, and the reference of the tests).
 *
 * How a value finds its bucket without a binary search: |x|'s IEEE bits shifted
 * right so that 11 exponent bits and the top 4 mantissa bits remain are a cell
 * number; every cell spans a ratio of at most 1 + 1/16 between its ends, less than
 * the 1.1 between two edges, so it holds at most one edge. A table made in Python
 * (_histogram._cells(), which checks that property) gives, per cell, the index of
 * the last positive edge <= the cell's lowest value; one comparison with the next
 * edge finishes the search.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define CELL_SHIFT (52 - 4)

PyDoc_STRVAR(count_doc,
"count(values, positive_edges, cells, counts) -> misplaced\n\n"
"Add to counts (int64, 2 * L buckets) the bucket counts of values (float64), for\n"
"the edges -p[L-1] .. -p[0], 0, p[0] .. p[L-1] where p is positive_edges (float64,\n"
"L of them) and cells the cell table (int32, 2**15 entries). Every buffer must be\n"
"C-contiguous; the GIL is released while counting. Returns how many values found no\n"
"bucket through the table (0 unless the table does not fit the edges).");

static PyObject *count(PyObject *self, PyObject *args) {
    Py_buffer values, edges, cells, counts;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &values, &edges, &cells, &counts)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = values.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t L = edges.len / (Py_ssize_t)sizeof(double);
    if (values.len % (Py_ssize_t)sizeof(double) || edges.len % (Py_ssize_t)sizeof(double) ||
        L < 2 || cells.len != (Py_ssize_t)(sizeof(int32_t) << 15) ||
        counts.len != (Py_ssize_t)sizeof(int64_t) * 2 * L) {
        PyErr_SetString(PyExc_ValueError, "count(): buffers of the wrong sizes");
        goto done;
    }
    const double *x = (const double *)values.buf, *p = (const double *)edges.buf;
    const int32_t *cell = (const int32_t *)cells.buf;
    int64_t *c = (int64_t *)counts.buf;
    const double low = -p[L - 1], high = p[L - 1];
    Py_ssize_t misplaced = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = x[i];
        if (!(v >= low && v <= high)) continue; /* outside, or NaN */
        uint64_t bits;
        memcpy(&bits, &v, 8);
        bits &= ~(UINT64_C(1) << 63); /* |v|, -0.0 included */
        double a;
        memcpy(&a, &bits, 8);
        Py_ssize_t j = cell[bits >> CELL_SHIFT]; /* last edge <= the cell's start, or -1 */
        if (j + 1 < L && a >= p[j + 1]) j++;     /* now p[j] <= a < p[j+1] (p[-1] = 0) */
        Py_ssize_t bucket;
        if (v >= 0) { /* [p[j], p[j+1]); j = -1: [0, p[0]); a == p[L-1]: the last, closed */
            bucket = L + 1 + j;
            if (bucket > 2 * L - 1) bucket = 2 * L - 1;
        } else { /* v in [-p[j+1], -p[j]) unless a == p[j]: then [-p[j], -p[j-1]) */
            bucket = L - 2 - j + (j >= 0 && a == p[j]);
        }
        if ((size_t)bucket < (size_t)(2 * L))
            c[bucket]++;
        else
            misplaced++; /* a table that does not fit the edges: never with _cells()'s */
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(misplaced);
done:
    PyBuffer_Release(&values);
    PyBuffer_Release(&edges);
    PyBuffer_Release(&cells);
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
