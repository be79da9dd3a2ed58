package model

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem with the input, named by the path a person would look at, so that conditions,
// events and logs can say exactly which object and field to fix.
type FieldError struct {
	// Path names the field, for example "hostSubnets[node2].spec.subnet" or "pods[ns1/web-0].ofport".
	Path string
	// Detail says what is wrong with it, for example "10.128.2.0/23 overlaps node3's 10.128.2.0/24".
	Detail string
}

// Error is part of the error interface.
func (e *FieldError) Error() string {
	return e.Path + ": " + e.Detail
}

// fieldErrorf builds a FieldError with a formatted detail.
func fieldErrorf(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Detail: fmt.Sprintf(format, args...)}
}

// InvalidInputError is returned by BuildNodeView when the node's view cannot be built at all, so that the
// caller keeps the data plane as it is and reports every problem at once.
type InvalidInputError struct {
	// Errors are the problems found, in input order; there is at least one.
	Errors []*FieldError
}

// Error is part of the error interface.
func (e *InvalidInputError) Error() string {
	msgs := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		msgs[i] = fe.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.As find each FieldError.
func (e *InvalidInputError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

// IsInvalidInput reports whether err means the input itself is wrong (retrying with the same objects and
// facts cannot succeed), as opposed to any other failure.
func IsInvalidInput(err error) bool {
	var ie *InvalidInputError
	return errors.As(err, &ie)
}
