/* SpanCore._enter / _exit: ActiveSpan.__enter__ and __exit__ for the common case, in C.
 *
 * Each does exactly what tracer/_core.py's ActiveSpan._enter_py / _exit_py do in their common
 * branch (the same stores, in the same order, and the same books) and calls that Python code
 * back for everything else: re-entry, a misplaced exit, an exception, a root hook, an unsampled
 * root, a parent that ended first. The recorder's own failures go to _core._internal_error,
 * reported once and swallowed, as in Python. They are reached through SpanCore's _enter and
 * _exit descriptors (_speedups_types.c), which bind without allocating.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_speedups.h"

static inline PyObject *
call2(PyObject *fn, PyObject *a, PyObject *b)
{
    PyObject *args[2] = {a, b};
    return PyObject_Vectorcall(fn, args, 2, NULL);
}

static inline int
call_method1(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *r = PyObject_CallMethodOneArg(obj, name, arg);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* ---- an internal error: reported once by the Python reporter, never raised ---- */
static int
swallow(SpanCore *self)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;  /* KeyboardInterrupt, SystemExit: not ours to swallow (as in Python) */
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *value = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
#endif
    PyObject *r = call2(spt.internal_error_py, (PyObject *)self, value ? value : Py_None);
    Py_XDECREF(value);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
    }
    Py_XDECREF(r);
    return 0;
}

/* ---- SpanCore._enter / _exit: ActiveSpan.__enter__/__exit__ for the common case ---- */

PyObject *
spt_span_enter(SpanCore *self, PyObject *unused)
{
    if (spt.enter_py == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "spectrace.tracer._speedups: install() was not called");
        return NULL;
    }
    if (self->start_ns)  /* entered before: the Python path reports it once */
        return PyObject_CallOneArg(spt.enter_py, (PyObject *)self);
    PyObject *parent, *window;
    if (PyContextVar_Get(spt.current_var, NULL, &parent) < 0)
        return NULL;
    if (parent == Py_None) {
        if (spt.state->on_root_start != NULL && spt.state->on_root_start != Py_None)
            goto python;  /* the caller's OTel parent and the sampler: Python (once per request) */
        window = Py_None;
    }
    else if (IS_SPAN(parent) && ((SpanCore *)parent)->end_ns == 0) {
        window = ((SpanCore *)parent)->window;
        if (window == NULL)
            window = Py_None;
    }
    else
        goto python;  /* a finished parent (ended out of order) or UNSAMPLED after a reconfiguration */
    PyObject *tid, *tname;
    if (spt_thread_pair(&tid, &tname) < 0) {
        Py_DECREF(parent);
        return NULL;
    }
    self->span_id = ++spt.last_span_id;
    Py_XSETREF(self->thread_id, Py_NewRef(tid));
    Py_XSETREF(self->thread_name, Py_NewRef(tname));
    if (self->io != spt.empty_io)
        Py_XSETREF(self->io, Py_NewRef(spt.empty_io));
    if (self->transfers != spt.empty_transfers)
        Py_XSETREF(self->transfers, Py_NewRef(spt.empty_transfers));
    self->end_ns = 0;
    Py_XSETREF(self->window, Py_NewRef(window));
    Py_XSETREF(self->parent, parent);  /* the reference PyContextVar_Get gave */
    PyObject *token = PyContextVar_Set(spt.current_var, (PyObject *)self);
    if (token == NULL)
        return NULL;
    Py_XSETREF(self->token, token);
    if (spt_now_ns(&self->start_ns) < 0)
        return NULL;
    return Py_NewRef(self);
python:
    Py_DECREF(parent);
    return PyObject_CallOneArg(spt.enter_py, (PyObject *)self);
}

/* The window's chunk list: w.window_data.chunks.append(s) while the window is open. */
static int
add_chunk(SpanCore *self, PyObject *w)
{
    if (self->name == NULL)
        return 0;
    int is_chunk = PyObject_RichCompareBool(self->name, spt.str_prefill_chunk, Py_EQ);
    if (is_chunk <= 0)
        return is_chunk;
    long long w_end;
    if (IS_SPAN(w))
        w_end = ((SpanCore *)w)->end_ns;
    else {
        PyObject *e = PyObject_GetAttrString(w, "end_ns");
        if (e == NULL)
            return -1;
        w_end = PyObject_IsTrue(e);
        Py_DECREF(e);
        if (w_end < 0)
            return -1;
    }
    if (w_end)
        return 0;
    PyObject *wd = PyObject_GetAttr(w, spt.str_window_data);
    if (wd == NULL)
        return -1;
    PyObject *chunks = PyObject_GetAttr(wd, spt.str_chunks);
    Py_DECREF(wd);
    if (chunks == NULL)
        return -1;
    int r = PyList_CheckExact(chunks) ? PyList_Append(chunks, (PyObject *)self)
                                      : call_method1(chunks, spt.str_append, (PyObject *)self);
    Py_DECREF(chunks);
    return r;
}

/* for cap in STATE.captures: cap._add(span) (tracer.capture(); a tuple, empty unless capturing). */
static int
offer_to_captures(SpanCore *self)
{
    PyObject *caps = spt.state->captures;
    if (caps == NULL || caps == Py_None || (PyTuple_CheckExact(caps) && PyTuple_GET_SIZE(caps) == 0))
        return 0;
    Py_INCREF(caps);  /* a capture ending meanwhile replaces the tuple; finish this one */
    PyObject *it = PyObject_GetIter(caps);
    Py_DECREF(caps);
    if (it == NULL)
        return -1;
    PyObject *cap;
    int r = 0;
    while (r == 0 && (cap = PyIter_Next(it)) != NULL) {
        r = call_method1(cap, spt.str_add, (PyObject *)self);
        Py_DECREF(cap);
    }
    Py_DECREF(it);
    return r < 0 || PyErr_Occurred() ? -1 : 0;
}

/* The common ending (no exception, sampled, parent open or none): _exit_py's inlined branch. */
static int
end_common(SpanCore *self, PyObject *parent)
{
    PyObject *token = self->token ? self->token : Py_NewRef(Py_None);
    self->token = NULL;  /* a kept Token is one more object for every garbage collection */
    if (PyContextVar_Reset(spt.current_var, token) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            Py_DECREF(token);
            return -1;
        }
        PyErr_Clear();  /* ended in another context (e.g. a generator moved across tasks) */
        PyObject *t = PyContextVar_Set(spt.current_var, parent);
        if (t == NULL) {
            Py_DECREF(token);
            return -1;
        }
        Py_DECREF(t);
    }
    Py_DECREF(token);
    if (parent != Py_None) {
        if (self->io != NULL && self->io != spt.empty_io) {
            int moved = PyObject_IsTrue(self->io);
            if (moved < 0)
                return -1;
            if (moved) {
                PyObject *r = call2(spt.roll_up_py, (PyObject *)self, parent);
                if (r == NULL)
                    return -1;
                Py_DECREF(r);
            }
        }
        PyObject *w = self->window;
        if (w != NULL && w != Py_None && add_chunk(self, w) < 0)
            return -1;
    }
    if (offer_to_captures(self) < 0)
        return -1;
    if (!spt.state->exporting) {
        spt.state->unexported += 1;  /* nothing would read a buffer: keep memory flat */
        return 0;
    }
    spt.state->offered += 1;
    PyObject *pending = spt.state->pending;
    if (pending == NULL) {
        PyErr_SetString(PyExc_AttributeError, "STATE.pending is not set");
        return -1;
    }
    Py_INCREF(pending);
    Py_ssize_t n = PyObject_Size(pending);
    int r = n < 0 ? -1 : n < spt.state->max_spans ? call_method1(pending, spt.str_append, (PyObject *)self) : 0;
    Py_DECREF(pending);
    if (r < 0)
        return -1;
    if (n >= spt.state->max_spans) {
        PyObject *one = PyLong_FromLong(1);
        PyObject *d = one ? PyObject_CallOneArg(spt.count_drop_py, one) : NULL;
        Py_XDECREF(one);
        if (d == NULL)
            return -1;
        Py_DECREF(d);
    }
    PyObject *hook = spt.state->on_root_end;
    if (parent == Py_None && hook != NULL && hook != Py_None) {
        Py_INCREF(hook);
        PyObject *h = PyObject_CallNoArgs(hook);
        Py_DECREF(hook);
        if (h == NULL)
            return -1;
        Py_DECREF(h);
    }
    return 0;
}

PyObject *
spt_span_exit(SpanCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long end;
    if (spt.exit_py == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "spectrace.tracer._speedups: install() was not called");
        return NULL;
    }
    if (spt_now_ns(&end) < 0)
        return NULL;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "__exit__ takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (self->end_ns || !self->start_ns) {  /* a second exit, or one without enter: Python reports it */
        PyObject *full[4] = {(PyObject *)self, args[0], args[1], args[2]};
        return PyObject_Vectorcall(spt.exit_py, full, 4, NULL);
    }
    self->end_ns = end;
    PyObject *parent = self->parent ? self->parent : Py_None;
    Py_INCREF(parent);
    int rare = args[0] != Py_None || !self->span_id
               || (parent != Py_None && !(IS_SPAN(parent) && ((SpanCore *)parent)->end_ns == 0));
    int failed;
    if (rare) {  /* an exception, an unsampled root, a parent that ended first: _finish */
        PyObject *full[3] = {(PyObject *)self, args[0], args[1]};
        PyObject *r = PyObject_Vectorcall(spt.finish_py, full, 3, NULL);
        Py_XDECREF(r);
        failed = r == NULL;
    }
    else
        failed = end_common(self, parent) < 0;
    Py_DECREF(parent);
    if (failed && swallow(self) < 0)
        return NULL;
    Py_RETURN_FALSE;
}
