// Go servers for mop's coverage matrix (standard library only); each answers GET /cov with
// 200 "covered\n" and prints `port N` once it listens on 127.0.0.1.
//
//	server h1 PORT           net/http, HTTP/1.1 cleartext
//	server tls PORT CERT KEY net/http over crypto/tls (HTTP/2 through ALPN, or HTTP/1.1)
//	server proxy PORT UPSTREAM  every request answered after a GET /ok to 127.0.0.1:UPSTREAM
//	                         (net/http client, keep-alive; no trace header of its own)
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	mode, port := os.Args[1], os.Args[2]
	mux := http.NewServeMux()
	mux.HandleFunc("/cov", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("covered\n"))
	})
	if mode == "proxy" {
		upstream := "http://127.0.0.1:" + os.Args[3] + "/ok"
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			resp, err := http.Get(upstream)
			if err != nil {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			w.Header().Set("Content-Type", "text/plain")
			w.Write(append([]byte("proxied "), body...))
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: mux}
	switch mode {
	case "h1", "proxy":
		err = srv.Serve(ln)
	case "tls":
		err = srv.ServeTLS(ln, os.Args[3], os.Args[4])
	default:
		err = fmt.Errorf("unknown mode %s", mode)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
