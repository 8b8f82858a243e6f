/**
 * Calls to roar_nb/server's /roar/api/ through JupyterLab's ServerConnection (which
 * adds the token/XSRF headers). Errors arrive as {"error": {"message"}} and become
 * Error(message); nothing here touches the DOM.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export async function requestAPI<T>(endpoint: string, params: Record<string, string | null | undefined> = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const query = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v as string)}`)
    .join('&');
  const url = URLExt.join(settings.baseUrl, 'roar', 'api', endpoint) + (query ? `?${query}` : '');
  const response = await ServerConnection.makeRequest(url, { cache: 'no-store' }, settings);
  let data: any = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return data as T;
}
