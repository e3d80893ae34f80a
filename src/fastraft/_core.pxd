from libc.stdint cimport uint64_t

cdef class Message:
    cdef public int type
    cdef public uint64_t to
    cdef public uint64_t frm
    cdef public uint64_t term
    cdef public uint64_t log_term
    cdef public uint64_t index
    cdef public object entries
    cdef public uint64_t commit
    cdef public bint reject
    cdef public uint64_t reject_hint
    cdef public object snapshot
    cdef public bytes context
